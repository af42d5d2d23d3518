/**
 * Download progress as numbers (the caller formats them: a bar on a terminal, a line on /health).
 */

/** Progress over the files one step of a resolve downloads (the configs and tokenizer, then the weights). */
export interface DownloadProgress {
  /** The file being downloaded. */
  file: string;
  /** Bytes on disk so far over the step's files, resumed bytes included. */
  bytes: number;
  /** Bytes of all the step's files. */
  total: number;
  /** Bytes per second received by this process (resumed bytes excluded); 0 before any. */
  rate: number;
  /** Seconds left at that rate; Infinity while the rate is 0. */
  etaSeconds: number;
}

/** Accumulates bytes and reports at most every `intervalMs`, plus at the end of every file. */
export interface ProgressTracker {
  add(file: string, n: number, resumed: boolean): void;
  fileDone(file: string): void;
}

/**
 * @param total bytes to reach
 * @param onProgress the listener (nothing is computed without one)
 * @param options clock and interval, for tests
 */
export function createProgressTracker(
  total: number,
  onProgress: ((p: DownloadProgress) => void) | undefined,
  { now = () => performance.now(), intervalMs = 100 }: { now?: () => number; intervalMs?: number } = {},
): ProgressTracker {
  const start = now();
  let bytes = 0;
  let received = 0;
  let last = -Infinity;
  const report = (file: string) => {
    last = now();
    const seconds = (last - start) / 1000;
    const rate = seconds > 0 ? received / seconds : 0;
    const etaSeconds = rate > 0 ? (total - bytes) / rate : Infinity;
    onProgress!({ file, bytes, total, rate, etaSeconds });
  };
  return {
    add(file, n, resumed) {
      bytes += n;
      if (!resumed) received += n;
      if (onProgress && now() - last >= intervalMs) report(file);
    },
    fileDone(file) {
      if (onProgress) report(file);
    },
  };
}
