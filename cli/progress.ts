/**
 * A one-line progress bar with ETA for the command-line tasks. On a terminal the line is redrawn in place
 * (at most every 100 ms); elsewhere (CI logs, pipes) one line is printed whenever the label changes.
 */

/** Where the bar draws: Deno.stderr, or a fake in tests. */
export interface ProgressStream {
  writeSync(p: Uint8Array): number;
  isTerminal(): boolean;
}

/** A progress bar bound to one stream. */
export interface ProgressBar {
  /** fraction in [0, 1] of the whole job; label says what runs now */
  update(fraction: number, label: string): void;
  /** Prints a line above the bar. */
  log(line: string): void;
  /** Ends the bar's line. */
  done(): void;
}

/**
 * Creates a progress bar.
 * @param stream the output
 * @param options clock (for tests)
 * @returns the bar
 */
export function createProgressBar(
  stream: ProgressStream,
  { now = () => performance.now() }: { now?: () => number } = {},
): ProgressBar {
  const enc = new TextEncoder();
  const write = (s: string) => {
    const bytes = enc.encode(s);
    for (let done = 0; done < bytes.length;) done += stream.writeSync(bytes.subarray(done));
  };
  const tty = stream.isTerminal();
  const start = now();
  let lastDraw = -Infinity;
  let lastLabel = "";
  let drawn = false;
  const line = (fraction: number, label: string) => {
    const f = Math.min(Math.max(fraction, 0), 1);
    const elapsed = (now() - start) / 1000;
    const eta = f > 0 ? formatSeconds((elapsed * (1 - f)) / f) : "?";
    const width = 20;
    const full = Math.round(f * width);
    const bar = "█".repeat(full) + "░".repeat(width - full);
    return `[${bar}] ${(f * 100).toFixed(0).padStart(3)}% ${label} · ${
      formatSeconds(elapsed)
    } elapsed · ETA ${eta}`;
  };
  return {
    update(fraction, label) {
      if (tty) {
        if (now() - lastDraw < 100 && fraction < 1) return;
        lastDraw = now();
        write(`\r\x1b[K${line(fraction, label)}`);
        drawn = true;
      } else if (label !== lastLabel) {
        write(`${line(fraction, label)}\n`);
      }
      lastLabel = label;
    },
    log(text) {
      write(tty && drawn ? `\r\x1b[K${text}\n` : `${text}\n`);
      lastDraw = -Infinity;
    },
    done() {
      if (tty && drawn) write("\n");
      drawn = false;
    },
  };
}

/** "0.42 s", "12.3 s", "3m07s", "2h05m". */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  if (s < 10) return `${s.toFixed(2)} s`;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

/** "812 B", "3.4 KiB", "1.20 GiB". */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[u]}`;
}
