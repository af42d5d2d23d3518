/**
 * The string and number frames of the byte automaton (json_automaton.ts): a string's characters (escapes,
 * UTF-8 checked byte by byte, min/maxLength, a pattern's DFA over the decoded characters) and a JSON number's
 * grammar. Apart from the automaton because these are the JSON values read byte by byte within one frame.
 */
import {
  BACKSLASH,
  DOT,
  type Feed,
  type Frame,
  isDigit,
  isHex,
  MINUS,
  Num,
  on,
  PLUS,
  QUOTE,
  type Stack,
  ZERO,
} from "./json_automaton_frames.ts";

/** Feeds byte `b` to a string frame `f` on top of stack `s`. */
export function feedString(s: Stack, f: Frame & { t: "str" }, b: number, out: Stack[]): void {
  const up = s.up!;
  const track = f.node.minLength > 0 || Number.isFinite(f.node.maxLength);
  const room = f.len < f.node.maxLength;
  const dfa = f.node.pattern;
  // The pattern reads decoded characters: raw bytes as they come, an escape as the byte it stands for.
  const re = (byte: number) => (dfa ? dfa.step(f.re, byte) : 0);
  if (f.u8 > 0) {
    const d = re(b);
    if (b >= 0x80 && b <= 0xbf && d >= 0) out.push(on(up, { ...f, u8: f.u8 - 1, re: d }));
    return;
  }
  if (f.esc === 1) {
    const decoded = ESCAPES.get(b);
    if (b === 0x75 && !dfa) out.push(on(up, { ...f, esc: 2 })); // \u (not under a pattern: code units)
    else if (decoded !== undefined) {
      const d = re(decoded);
      if (d >= 0) out.push(on(up, { ...f, esc: 0, len: track ? f.len + 1 : 0, re: d }));
    }
    return;
  }
  if (f.esc >= 2) {
    if (!isHex(b)) return;
    out.push(on(up, f.esc === 5 ? { ...f, esc: 0, len: track ? f.len + 1 : 0 } : { ...f, esc: f.esc + 1 }));
    return;
  }
  if (b === QUOTE) {
    if (f.len < f.node.minLength || (dfa && !dfa.accepting(f.re))) return;
    out.push(up);
    return;
  }
  if (b < 0x20 || !room) return;
  if (b === BACKSLASH) {
    // Under a pattern, only where an escape's character may come next (else the string could not go on).
    if (!dfa || ESCAPED.some((e) => dfa.step(f.re, e) >= 0)) out.push(on(up, { ...f, esc: 1 }));
    return;
  }
  const d = re(b);
  if (d < 0) return;
  if (b < 0x80) {
    // The common case: an unconstrained string stays in the very same state (no allocation).
    out.push(track || dfa ? on(up, { ...f, len: track ? f.len + 1 : 0, re: d }) : s);
    return;
  }
  const more = b >= 0xc2 && b <= 0xdf ? 1 : b >= 0xe0 && b <= 0xef ? 2 : b >= 0xf0 && b <= 0xf4 ? 3 : 0;
  if (more > 0) out.push(on(up, { ...f, u8: more, len: track ? f.len + 1 : 0, re: d }));
}

/** The byte each one-character JSON escape stands for. */
const ESCAPES = new Map(
  [...'"\\/bfnrt'].map((c, i) => [c.charCodeAt(0), [0x22, 0x5c, 0x2f, 0x08, 0x0c, 0x0a, 0x0d, 0x09][i]]),
);

/** The bytes the one-character escapes stand for. */
const ESCAPED = [...ESCAPES.values()];

/** Whether a number may end in phase `p`. */
export function numAccepting(p: Num): boolean {
  return p === Num.Zero || p === Num.Int || p === Num.Frac || p === Num.ExpDigits;
}

/**
 * Feeds byte `b` to a number frame `f` on top of stack `s`; a byte that ends the number goes to what follows,
 * through `feed` (the automaton's step, passed in: it dispatches here).
 */
export function feedNumber(s: Stack, f: Frame & { t: "num" }, b: number, out: Stack[], feed: Feed): void {
  const up = s.up!;
  const to = (phase: Num): void => {
    out.push(phase === f.phase ? s : on(up, { ...f, phase }));
  };
  const digit = isDigit(b);
  const fraction = !f.integer && b === DOT;
  const exponent = !f.integer && (b === 0x65 || b === 0x45);
  switch (f.phase) {
    case Num.Sign:
      if (b === ZERO) to(Num.Zero);
      else if (digit) to(Num.Int);
      return;
    case Num.Zero:
    case Num.Int:
      if (digit && f.phase === Num.Int) return to(Num.Int);
      if (fraction) return to(Num.Dot);
      if (exponent) return to(Num.Exp);
      if (!digit) feed(up, b, out); // the number ended; the byte is the next token's
      return;
    case Num.Dot:
      if (digit) to(Num.Frac);
      return;
    case Num.Frac:
      if (digit) return to(Num.Frac);
      if (exponent) return to(Num.Exp);
      return feed(up, b, out);
    case Num.Exp:
      if (b === PLUS || b === MINUS) to(Num.ExpSign);
      else if (digit) to(Num.ExpDigits);
      return;
    case Num.ExpSign:
      if (digit) to(Num.ExpDigits);
      return;
    case Num.ExpDigits:
      if (digit) return to(Num.ExpDigits);
      return feed(up, b, out);
  }
}
