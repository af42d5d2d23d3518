/**
 * Stop-string handling for streamed text: emits text as soon as it cannot be the start of a stop
 * string, and cuts the output before the first stop string (OpenAI semantics: the stop string
 * itself is not returned, unless vLLM's include_stop_str_in_output asks for it).
 */

export interface StopMatcher {
  /** Adds decoded text; returns what is safe to emit now and whether a stop string was hit (`stop`: which). */
  push(text: string): { emit: string; stopped: boolean; stop?: string };
  /** Returns the held-back tail at the end of generation. */
  flush(): string;
}

/**
 * @param stops stop strings (empty strings are ignored)
 * @param includeStop keep the stop string that matched at the end of the text (vLLM's
 *   include_stop_str_in_output; the earliest match, the first listed among those starting there)
 * @returns a matcher holding back at most (longest stop − 1) characters
 */
export function createStopMatcher(stops: readonly string[], includeStop = false): StopMatcher {
  const active = stops.filter((s) => s.length > 0);
  const hold = active.reduce((m, s) => Math.max(m, s.length - 1), 0);
  let pending = "";
  let stopped = false;
  return {
    push(text) {
      if (stopped) return { emit: "", stopped };
      pending += text;
      let cut = -1;
      let hit = "";
      for (const stop of active) {
        const at = pending.indexOf(stop);
        if (at >= 0 && (cut < 0 || at < cut)) [cut, hit] = [at, stop];
      }
      if (cut >= 0) {
        stopped = true;
        const emit = pending.slice(0, includeStop ? cut + hit.length : cut);
        pending = "";
        return { emit, stopped, stop: hit };
      }
      const safe = Math.max(0, pending.length - holdFor(pending));
      const emit = pending.slice(0, safe);
      pending = pending.slice(safe);
      return { emit, stopped };
    },
    flush() {
      const rest = stopped ? "" : pending;
      pending = "";
      return rest;
    },
  };

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  function holdFor(text: string): number {
    for (let n = Math.min(hold, text.length); n > 0; n--) {
      const tail = text.slice(text.length - n);
      if (active.some((s) => s.startsWith(tail))) return n;
    }
    return 0;
  }
}
