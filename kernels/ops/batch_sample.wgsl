// Token sampling: one workgroup per row of logits, each with its sequence slot's own settings and RNG
// stream. kernels/ops/batch_sample.ts states the semantics and builds this module (it prepends
// `struct StepState`, `struct SlotState` and `struct SlotParams`).

override WG: u32 = 512u;   // invocations, a power of two
override GS: u32 = 32u;    // invocations per draw group; the WG / GS groups own contiguous segments
override POOL4: u32 = 512u; // vec4 slots of the workgroup pool the search moves to once few tokens remain

struct Dims { vocab: u32, rows: u32, maxSlots: u32, negInf: f32, posInf: f32 }

// Row i of the logits is elements [base, base + vocab) of the buffer, base = i · vocab: vec4s vLo .. vHi − 1
// cover it (the first and last partially). Everything a pass needs about its row travels in this value,
// which is uniform across the workgroup (module-scope private variables would not be, for the barriers);
// the RNG step is read where it is used, since read_write storage is never uniform.
struct Row {
  vocab: u32, base: u32, vLo: u32, vHi: u32,
  temperature: f32, topP: f32, topK: u32, minP: f32, seed: u32, slot: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> logits4: array<vec4<f32>>; // (rows · vocab) as whole vec4s
@group(0) @binding(2) var<storage, read> logits: array<f32>;        // the same, for the edges
@group(0) @binding(3) var<storage, read> slotParams: array<SlotParams>;
@group(0) @binding(4) var<storage, read> gather: array<u32>;        // (rows) forward row of logit row i
@group(0) @binding(5) var<storage, read> rowSlot: array<u32>;       // forward row → slot
@group(0) @binding(6) var<storage, read> state: StepState;          // state.step: the chunk's step
@group(0) @binding(7) var<storage, read_write> slots: array<SlotState>;
@group(0) @binding(8) var<storage, read_write> outTokens: array<u32>; // (steps, maxSlots)
@group(0) @binding(9) var<storage, read_write> counts: array<u32>;    // (maxSlots, vocab)

const NONE: u32 = 0xffffffffu;
const LOWEST: f32 = -3.40282347e38;

var<workgroup> red: array<vec4<f32>, 2 * WG>; // reductions; .x/.y double as scalar scratch
var<workgroup> red2: array<vec4<f32>, 64>;
var<workgroup> redU: array<u32, WG>;
var<workgroup> pool: array<vec4<f32>, POOL4>;
var<workgroup> poolFill: atomic<u32>;

// An unconditional vec4 load (so unrolled loops keep several in flight), then the edge fix-up: the
// first and last vec4 may be partial or past the binding, so they are gathered from the scalar
// view, with lanes outside the row read as −inf, which no threshold keeps.
fn raw4(v: u32) -> vec4<f32> { return logits4[min(v, arrayLength(&logits4) - 1u)]; }
fn fix4(v: u32, x: vec4<f32>, r: Row) -> vec4<f32> {
  if (v != r.vLo && v + 1u != r.vHi) { return x; }
  var y = vec4(dims.negInf);
  for (var c = 0u; c < 4u; c++) {
    let g = 4u * v + c;
    if (g >= r.base && g < r.base + r.vocab) { y[c] = logits[g]; }
  }
  return y;
}
fn load4(v: u32, r: Row) -> vec4<f32> { return fix4(v, raw4(v), r); }

// The midpoint by two exact halvings and one rounding, so an FMA cannot change it (the reference
// computes the same f32).
fn mid(a: f32, b: f32) -> f32 { return a * 0.5 + b * 0.5; }

fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}

fn keptMass(x: vec4<f32>, thr: f32, mx: f32, invT: f32) -> vec4<f32> {
  return select(vec4(0.0), exp((x - vec4(mx)) * invT), x >= vec4(thr));
}

// The pick: the output record of (chunk step, slot), the slot's next input id and RNG step, and the
// penalties' count of this token in the output.
fn emit(token: u32, r: Row) {
  outTokens[state.step * dims.maxSlots + r.slot] = token;
  slots[r.slot].token = token;
  slots[r.slot].step = slots[r.slot].step + 1u;
  let c = r.slot * r.vocab + token;
  counts[c] = counts[c] + 1u;
}

// Per-lane running max and min; strict > keeps the lowest index, since each lane sees indices in
// order. −inf lanes stay out of the min.
struct Extremes { mx: vec4<f32>, at: vec4<u32>, mn: vec4<f32> }
fn maxStep(v: u32, x: vec4<f32>, e: ptr<function, Extremes>, r: Row) {
  let gt = x > (*e).mx;
  (*e).mx = select((*e).mx, x, gt);
  (*e).at = select((*e).at, vec4(4u * v) + vec4(0u, 1u, 2u, 3u) - vec4(r.base), gt);
  (*e).mn = min((*e).mn, select(x, vec4(dims.posInf), x == vec4(dims.negInf)));
}

// One 4-way search step: counts (as exact f32) and masses at or above three thresholds t.xyz, and
// the whole mass Z in .w of `mass` when asked (mode 2); mode 0 skips masses (top-p off).
struct Tally { count: vec4<f32>, mass: vec4<f32> }
fn tallyStep(x: vec4<f32>, t: vec3<f32>, mx: f32, invT: f32, mode: u32, acc: ptr<function, Tally>) {
  let ge1 = x >= vec4(t.x);
  let ge2 = x >= vec4(t.y);
  let ge3 = x >= vec4(t.z);
  let one = vec4(1.0);
  (*acc).count += vec4(dot(select(vec4(0.0), one, ge1), one), dot(select(vec4(0.0), one, ge2), one),
                       dot(select(vec4(0.0), one, ge3), one), 0.0);
  if (mode == 0u || !(mode == 2u || any(ge1))) { return; }
  let p = select(vec4(0.0), exp((x - vec4(mx)) * invT), x > vec4(LOWEST));
  (*acc).mass += vec4(dot(select(vec4(0.0), p, ge1), one), dot(select(vec4(0.0), p, ge2), one),
                      dot(select(vec4(0.0), p, ge3), one), select(0.0, dot(p, one), mode == 2u));
}

// Sums both vec4s of every invocation's tally in two levels (3 barriers instead of log2(WG)).
fn reduceTally(lid: u32, t: Tally) -> Tally {
  workgroupBarrier();
  red[lid] = t.count;
  red[WG + lid] = t.mass;
  workgroupBarrier();
  let r = min(32u, WG);
  if (lid < r) {
    var s = vec4(0.0);
    var sm = vec4(0.0);
    for (var j = lid; j < WG; j += r) {
      s += red[j];
      sm += red[WG + j];
    }
    red2[lid] = s;
    red2[r + lid] = sm;
  }
  workgroupBarrier();
  if (lid < 2u) {
    var s = vec4(0.0);
    for (var j = 0u; j < r; j++) { s += red2[lid * r + j]; }
    red[lid] = s;
  }
  return Tally(workgroupUniformLoad(&red[0]), workgroupUniformLoad(&red[1]));
}

// The smallest value over invocations 0..n−1 (n a power of two), uniform.
fn minOver(lid: u32, value: u32, n: u32) -> u32 {
  workgroupBarrier();
  redU[lid] = value;
  workgroupBarrier();
  for (var s = n / 2u; s > 0u; s >>= 1u) {
    if (lid < s) { redU[lid] = min(redU[lid], redU[lid + s]); }
    workgroupBarrier();
  }
  return workgroupUniformLoad(&redU[0]);
}

// Inclusive scan of red[0..n).x (n a power of two), Hillis–Steele.
fn scan(lid: u32, n: u32) {
  workgroupBarrier();
  for (var off = 1u; off < n; off <<= 1u) {
    var add = 0.0;
    if (lid < n && lid >= off) { add = red[lid - off].x; }
    workgroupBarrier();
    if (lid < n) { red[lid].x += add; }
    workgroupBarrier();
  }
}

// Walks vec4 v from running mass cum0 and emits the first kept token whose running mass exceeds u,
// else the last kept token of the vec4 (f32 rounding at a boundary), else `fallback`.
fn walk(v: u32, cum0: f32, u: f32, thr: f32, mx: f32, invT: f32, fallback: u32, r: Row) {
  let x = load4(v, r);
  let p = keptMass(x, thr, mx, invT);
  var cum = cum0;
  var last = fallback;
  for (var c = 0u; c < 4u; c++) {
    if (x[c] >= thr) {
      cum += p[c];
      last = 4u * v + c - r.base;
      if (cum > u) { break; }
    }
  }
  emit(last, r);
}

// Max, its lowest index and the smallest finite logit. Loops are unrolled ×4 so each invocation
// keeps 4 loads in flight. Returns (bits of max, argmax, bits of min).
fn extremesPass(lid: u32, r: Row) -> vec3<u32> {
  var e = Extremes(vec4(LOWEST), vec4(NONE), vec4(dims.posInf));
  var v = r.vLo + lid;
  for (; v + 3u * WG < r.vHi; v += 4u * WG) {
    let a = raw4(v);
    let b = raw4(v + WG);
    let c = raw4(v + 2u * WG);
    let d = raw4(v + 3u * WG);
    maxStep(v, fix4(v, a, r), &e, r);
    maxStep(v + WG, fix4(v + WG, b, r), &e, r);
    maxStep(v + 2u * WG, fix4(v + 2u * WG, c, r), &e, r);
    maxStep(v + 3u * WG, fix4(v + 3u * WG, d, r), &e, r);
  }
  for (; v < r.vHi; v += WG) { maxStep(v, load4(v, r), &e, r); }
  var m = e.mx.x;
  var idx = e.at.x;
  for (var c = 1u; c < 4u; c++) {
    if (e.mx[c] > m || (e.mx[c] == m && e.at[c] < idx)) {
      m = e.mx[c];
      idx = e.at[c];
    }
  }
  red[lid] = vec4(m, min(min(e.mn.x, e.mn.y), min(e.mn.z, e.mn.w)), 0.0, 0.0);
  redU[lid] = idx;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (lid < s) {
      let m2 = red[lid + s].x;
      let i2 = redU[lid + s];
      if (m2 > red[lid].x || (m2 == red[lid].x && i2 < redU[lid])) {
        red[lid].x = m2;
        redU[lid] = i2;
      }
      red[lid].y = min(red[lid].y, red[lid + s].y);
    }
    workgroupBarrier();
  }
  let e0 = workgroupUniformLoad(&red[0]);
  return vec3(bitcast<u32>(e0.x), workgroupUniformLoad(&redU[0]), bitcast<u32>(e0.y));
}

// Copies the tokens in [lo, hi) (or [lo, +inf) before any threshold failed) into the pool; their
// order does not matter to counts and masses.
fn gatherPass(lid: u32, lo: f32, hi: f32, hiFails: bool, r: Row) {
  for (var i = lid; i < POOL4; i += WG) { pool[i] = vec4(dims.negInf); }
  if (lid == 0u) { atomicStore(&poolFill, 0u); }
  workgroupBarrier();
  let top = select(dims.posInf, hi, hiFails);
  for (var v = r.vLo + lid; v < r.vHi; v += WG) {
    let x = load4(v, r);
    let inside = (x >= vec4(lo)) & (x < vec4(top));
    if (!any(inside)) { continue; }
    for (var c = 0u; c < 4u; c++) {
      if (inside[c]) {
        let slot = atomicAdd(&poolFill, 1u);
        pool[slot / 4u][slot % 4u] = x[c];
      }
    }
  }
  workgroupBarrier();
}

// One search step over the row, or over the pool once the search has moved there.
fn tallyPass(lid: u32, t: vec3<f32>, mx: f32, invT: f32, mode: u32, pooled: bool, n4: u32, r: Row) -> Tally {
  var acc = Tally(vec4(0.0), vec4(0.0));
  if (pooled) {
    for (var i = lid; i < n4; i += WG) { tallyStep(pool[i], t, mx, invT, mode, &acc); }
    return reduceTally(lid, acc);
  }
  var v = r.vLo + lid;
  for (; v + 3u * WG < r.vHi; v += 4u * WG) {
    let a = raw4(v);
    let b = raw4(v + WG);
    let c = raw4(v + 2u * WG);
    let d = raw4(v + 3u * WG);
    tallyStep(fix4(v, a, r), t, mx, invT, mode, &acc);
    tallyStep(fix4(v + WG, b, r), t, mx, invT, mode, &acc);
    tallyStep(fix4(v + 2u * WG, c, r), t, mx, invT, mode, &acc);
    tallyStep(fix4(v + 3u * WG, d, r), t, mx, invT, mode, &acc);
  }
  for (; v < r.vHi; v += WG) { tallyStep(load4(v, r), t, mx, invT, mode, &acc); }
  return reduceTally(lid, acc);
}

// Threshold search for top-k / top-p: a 4-way bisection over logit values for the largest threshold
// lo that an enabled filter still accepts; [lo, hi) is the bracket, hi the lowest rejected
// threshold. Returns lo; the kept set is {l ≥ lo}. The bracket starts at [min, max]; the first step
// tests max itself. It stops once at most one token lies in [lo, hi) (the kept set can no longer
// change), when the halvings stop making progress (ties), or after 24 steps. Once the bracket holds
// ≤ 4·POOL4 tokens they move to the pool, and later steps read only those.
fn searchThreshold(lid: u32, mx: f32, mn: f32, invT: f32, r: Row) -> f32 {
  let kOn = r.topK > 0u && r.topK < r.vocab;
  let pOn = r.topP < 1.0;
  let topK = f32(r.topK);
  var q = 0.0;
  var lo = mn;
  var hi = mx;
  var hiFails = false;
  var cK = f32(r.vocab); // tokens ≥ lo (an upper bound before the first step)
  var cHi = 0.0;            // tokens ≥ hi once hi failed
  var mHi = 0.0;            // their mass
  var pooled = false;
  var base = vec2(0.0);     // count and mass above the pool
  var poolN4 = 0u;
  for (var step = 0u; step < 24u && (kOn || pOn) && cK - cHi > 1.0 && lo < hi; step++) {
    let c2 = mid(lo, hi);
    let t = vec3(mid(lo, c2), c2, select(hi, mid(c2, hi), hiFails));
    if (hiFails && !any((t > vec3(lo)) & (t < vec3(hi)))) { break; }
    if (!pooled && cK - cHi <= f32(4u * POOL4)) {
      gatherPass(lid, lo, hi, hiFails, r);
      pooled = true;
      base = vec2(cHi, mHi);
      poolN4 = u32(cK - cHi + 3.0) / 4u;
    }
    let mode = select(select(1u, 2u, step == 0u), 0u, !pOn);
    let rt = tallyPass(lid, t, mx, invT, mode, pooled, poolN4, r);
    if (step == 0u) { q = r.topP * rt.mass.w; }
    let n = rt.count + vec4(base.x);
    let m = rt.mass + vec4(base.y);
    // The largest passing candidate (counts and masses are nonincreasing in j).
    var j = 3u;
    while (j > 0u && !(n[j - 1u] > 0.0 && ((kOn && n[j - 1u] >= topK) || (pOn && m[j - 1u] >= q)))) { j--; }
    if (j > 0u) {
      lo = t[j - 1u];
      cK = n[j - 1u];
    }
    if (j < 3u) {
      hi = t[j];
      cHi = n[j];
      mHi = m[j];
      hiFails = true;
    }
  }
  return lo;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x;
  if (row >= dims.rows) { return; }
  let src = gather[row];
  if (src == NONE) { return; }
  let slot = rowSlot[src];
  if (slot == NONE) { return; }
  let p = slotParams[slot];
  let rowBase = row * dims.vocab;
  let r = Row(dims.vocab, rowBase, rowBase / 4u, (rowBase + dims.vocab + 3u) / 4u, p.temperature, p.topP, p.topK,
              p.minP, p.seed, slot);
  let greedy = r.temperature <= 0.0;
  let invT = select(1.0 / r.temperature, 0.0, greedy);
  let ex = extremesPass(lid, r);
  let mx = bitcast<f32>(ex.x);
  let argmax = select(ex.y, 0u, ex.y == NONE); // NONE: every logit was −inf
  if (greedy) {
    if (lid == 0u) { emit(argmax, r); }
    return;
  }
  var tMin = LOWEST;
  if (r.minP > 0.0) { tMin = mx + r.temperature * log(min(r.minP, 1.0)); }
  let thr = max(searchThreshold(lid, mx, bitcast<f32>(ex.z), invT, r), tMin);

  // Draw, phase A: kept mass per group segment (lanes stride the segment), then a scan over groups.
  let ng = WG / GS;
  let g = lid / GS;
  let n4 = r.vHi - r.vLo;
  let segLen = (n4 + ng - 1u) / ng;
  let segEnd = r.vLo + min((g + 1u) * segLen, n4);
  var part = vec4(0.0);
  var w = r.vLo + g * segLen + lid % GS;
  for (; w + 3u * GS < segEnd; w += 4u * GS) {
    let a = raw4(w);
    let b = raw4(w + GS);
    let c = raw4(w + 2u * GS);
    let d = raw4(w + 3u * GS);
    part += keptMass(fix4(w, a, r), thr, mx, invT) + keptMass(fix4(w + GS, b, r), thr, mx, invT);
    part += keptMass(fix4(w + 2u * GS, c, r), thr, mx, invT) + keptMass(fix4(w + 3u * GS, d, r), thr, mx, invT);
  }
  for (; w < segEnd; w += GS) { part += keptMass(load4(w, r), thr, mx, invT); }
  workgroupBarrier();
  red[lid].x = dot(part, vec4(1.0));
  workgroupBarrier();
  for (var s = GS / 2u; s > 0u; s >>= 1u) {
    if (lid % GS < s) { red[lid].x += red[lid + s].x; }
    workgroupBarrier();
  }
  if (lid < ng) { red[lid].y = red[lid * GS].x; }
  workgroupBarrier();
  if (lid < ng) { red[lid].x = red[lid].y; }
  scan(lid, ng);
  let kept = workgroupUniformLoad(&red[ng - 1u]).x;
  let u = f32(pcg(pcg(r.seed) + slots[r.slot].step) >> 8u) * (1.0 / 16777216.0) * kept;
  let owner = minOver(lid, select(NONE, lid, lid < ng && red[lid].x > u), ng);
  if (owner == NONE) {
    if (lid == 0u) { emit(argmax, r); } // only on non-finite sums
    return;
  }

  // Phase B: the owning segment, a tile of WG vec4s at a time: scan the tile, find the vec4 where
  // the running mass first exceeds u, and let its invocation walk the four lanes.
  var base = workgroupUniformLoad(&red[max(owner, 1u) - 1u]).x;
  if (owner == 0u) { base = 0.0; }
  let end = r.vLo + min((owner + 1u) * segLen, n4);
  for (var t = r.vLo + owner * segLen; t < end; t += WG) {
    let vt = t + lid;
    var s4 = 0.0;
    if (vt < end) { s4 = dot(keptMass(load4(vt, r), thr, mx, invT), vec4(1.0)); }
    workgroupBarrier();
    red[lid].x = s4;
    scan(lid, WG);
    var before = base;
    if (lid > 0u) { before = base + red[lid - 1u].x; }
    var hit = minOver(lid, select(NONE, lid, base + red[lid].x > u), WG);
    if (hit == NONE && t + WG >= end) {
      // u fell past this segment's mass by rounding: take its last kept token.
      let back = minOver(lid, select(NONE, WG - 1u - lid, s4 > 0.0), WG);
      if (back == NONE) {
        if (lid == 0u) { emit(argmax, r); }
        return;
      }
      hit = WG - 1u - back;
    }
    if (hit != NONE) {
      if (lid == hit) { walk(vt, before, u, thr, mx, invT, argmax, r); }
      return;
    }
    base = base + workgroupUniformLoad(&red[WG - 1u]).x;
  }
}
