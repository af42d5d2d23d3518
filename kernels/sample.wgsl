// Token sampling in one workgroup; kernels/sample.ts states the semantics and builds this module
// (it prepends `struct StepState` from step_state.ts).

override WG: u32 = 512u;   // invocations, a power of two
override GS: u32 = 32u;    // invocations per draw group; the WG / GS groups own contiguous segments
override POOL4: u32 = 512u; // vec4 slots of the workgroup pool the search moves to once few tokens remain

// Element e of the row is logits[shift + e]; vec4 v covers elements 4v − shift .. 4v + 3 − shift.
struct Dims { vocab: u32, historyLen: u32, shift: u32, vLo: u32, vHi: u32, negInf: f32, posInf: f32 }
struct SampleParams {
  temperature: f32, topP: f32, topK: u32, minP: f32, seed: u32, pad0: u32, pad1: u32, pad2: u32
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> logits4: array<vec4<f32>>; // the whole vec4s of the row
@group(0) @binding(2) var<storage, read> logits: array<f32>;        // (shift + vocab) f32, for the edges
@group(0) @binding(3) var<storage, read> params: SampleParams;
@group(0) @binding(4) var<storage, read> state: StepState;
@group(0) @binding(5) var<storage, read_write> tokenOut: array<u32>; // [1] u32
@group(0) @binding(6) var<storage, read_write> history: array<u32>;  // [historyLen] u32 ring

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
fn fix4(v: u32, x: vec4<f32>) -> vec4<f32> {
  if (v != dims.vLo && v + 1u != dims.vHi) { return x; }
  var y = vec4(dims.negInf);
  for (var c = 0u; c < 4u; c++) {
    let g = 4u * v + c;
    if (g >= dims.shift && g < dims.shift + dims.vocab) { y[c] = logits[g]; }
  }
  return y;
}
fn load4(v: u32) -> vec4<f32> { return fix4(v, raw4(v)); }

// Inverse of the order-preserving key (u32 order = f32 order), clamped to [LOWEST, +inf].
fn keyValue(k: u32) -> f32 {
  if (k < 0x00800000u) { return LOWEST; }
  if (k > 0xff7fffffu) { return dims.posInf; }
  return bitcast<f32>(select(~k, k & 0x7fffffffu, k >= 0x80000000u));
}

fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}

fn keptMass(x: vec4<f32>, thr: f32, mx: f32, invT: f32) -> vec4<f32> {
  return select(vec4(0.0), exp((x - vec4(mx)) * invT), x >= vec4(thr));
}

fn emit(token: u32) {
  tokenOut[0] = token;
  history[state.step % dims.historyLen] = token;
}

// Per-lane running max; strict > keeps the lowest index, since each lane sees indices in order.
fn maxStep(v: u32, x: vec4<f32>, m: ptr<function, vec4<f32>>, i: ptr<function, vec4<u32>>) {
  let gt = x > *m;
  *m = select(*m, x, gt);
  *i = select(*i, vec4(4u * v) + vec4(0u, 1u, 2u, 3u) - vec4(dims.shift), gt);
}

// One 4-way search step: counts (as exact f32) and masses at or above three thresholds t.xyz, and
// the whole mass Z in .w of \`mass\` when asked (mode 2); mode 0 skips masses (top-p off).
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
  if (lid < 2u * r) {
    var s = vec4(0.0);
    for (var j = lid % r; j < WG; j += r) { s += red[(lid / r) * WG + j]; }
    red2[lid] = s;
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
// else the last kept token of the vec4 (f32 rounding at a boundary), else \`fallback\`.
fn walk(v: u32, cum0: f32, u: f32, thr: f32, mx: f32, invT: f32, fallback: u32) {
  let x = load4(v);
  let p = keptMass(x, thr, mx, invT);
  var cum = cum0;
  var last = fallback;
  for (var c = 0u; c < 4u; c++) {
    if (x[c] >= thr) {
      cum += p[c];
      last = 4u * v + c - dims.shift;
      if (cum > u) { break; }
    }
  }
  emit(last);
}

// Max and its lowest index over the row. Loops are unrolled ×4 so each invocation keeps 4 loads in flight.
fn argmaxPass(lid: u32) -> vec2<u32> {
  var m4 = vec4(LOWEST);
  var i4 = vec4(NONE);
  var v = dims.vLo + lid;
  for (; v + 3u * WG < dims.vHi; v += 4u * WG) {
    let a = raw4(v);
    let b = raw4(v + WG);
    let c = raw4(v + 2u * WG);
    let d = raw4(v + 3u * WG);
    maxStep(v, fix4(v, a), &m4, &i4);
    maxStep(v + WG, fix4(v + WG, b), &m4, &i4);
    maxStep(v + 2u * WG, fix4(v + 2u * WG, c), &m4, &i4);
    maxStep(v + 3u * WG, fix4(v + 3u * WG, d), &m4, &i4);
  }
  for (; v < dims.vHi; v += WG) { maxStep(v, load4(v), &m4, &i4); }
  var m = m4.x;
  var idx = i4.x;
  for (var c = 1u; c < 4u; c++) {
    if (m4[c] > m || (m4[c] == m && i4[c] < idx)) {
      m = m4[c];
      idx = i4[c];
    }
  }
  red[lid].x = m;
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
    }
    workgroupBarrier();
  }
  return vec2(bitcast<u32>(workgroupUniformLoad(&red[0]).x), workgroupUniformLoad(&redU[0]));
}

// Copies every token ≥ tv into the pool (order does not matter to counts and masses).
fn gatherPass(lid: u32, tv: f32) {
  for (var i = lid; i < POOL4; i += WG) { pool[i] = vec4(dims.negInf); }
  if (lid == 0u) { atomicStore(&poolFill, 0u); }
  workgroupBarrier();
  for (var v = dims.vLo + lid; v < dims.vHi; v += WG) {
    let x = load4(v);
    let ge = x >= vec4(tv);
    if (!any(ge)) { continue; }
    for (var c = 0u; c < 4u; c++) {
      if (ge[c]) {
        let slot = atomicAdd(&poolFill, 1u);
        pool[slot / 4u][slot % 4u] = x[c];
      }
    }
  }
  workgroupBarrier();
}

// One search step over the row, or over the pool once the search has moved there.
fn tallyPass(lid: u32, t: vec3<f32>, mx: f32, invT: f32, mode: u32, pooled: bool, n4: u32) -> Tally {
  var acc = Tally(vec4(0.0), vec4(0.0));
  if (pooled) {
    for (var i = lid; i < n4; i += WG) { tallyStep(pool[i], t, mx, invT, mode, &acc); }
    return reduceTally(lid, acc);
  }
  var v = dims.vLo + lid;
  for (; v + 3u * WG < dims.vHi; v += 4u * WG) {
    let a = raw4(v);
    let b = raw4(v + WG);
    let c = raw4(v + 2u * WG);
    let d = raw4(v + 3u * WG);
    tallyStep(fix4(v, a), t, mx, invT, mode, &acc);
    tallyStep(fix4(v + WG, b), t, mx, invT, mode, &acc);
    tallyStep(fix4(v + 2u * WG, c), t, mx, invT, mode, &acc);
    tallyStep(fix4(v + 3u * WG, d), t, mx, invT, mode, &acc);
  }
  for (; v < dims.vHi; v += WG) { tallyStep(load4(v), t, mx, invT, mode, &acc); }
  return reduceTally(lid, acc);
}

// Threshold search for top-k / top-p: the largest key K (2 bits per pass, from the top) whose
// threshold still satisfies an enabled filter. It stops once at most one token lies between the
// last passing and the last failing threshold, since the kept set can no longer change.
fn searchThreshold(lid: u32, mx: f32, invT: f32) -> f32 {
  let kOn = params.topK > 0u && params.topK < dims.vocab;
  let pOn = params.topP < 1.0;
  let topK = f32(params.topK);
  var q = 0.0;
  var K = 0u;
  var cK = dims.vocab; // tokens ≥ keyValue(K) (an upper bound before the first pass)
  var cHi = 0u;        // tokens ≥ the lowest failing threshold so far
  var pooled = false;
  var poolN4 = 0u;
  for (var step = 0u; step < 16u && (kOn || pOn) && cK - cHi > 1u; step++) {
    if (!pooled && cK <= 4u * POOL4) {
      gatherPass(lid, keyValue(K));
      pooled = true;
      poolN4 = (cK + 3u) / 4u;
    }
    let sh = 30u - 2u * step;
    let t = vec3(keyValue(K | (1u << sh)), keyValue(K | (2u << sh)), keyValue(K | (3u << sh)));
    let mode = select(select(1u, 2u, step == 0u), 0u, !pOn);
    let r = tallyPass(lid, t, mx, invT, mode, pooled, poolN4);
    if (step == 0u) { q = params.topP * r.mass.w; }
    // The largest of the three candidates that passes, if any (counts are nonincreasing in j).
    var next = 0u;
    for (var j = 3u; j >= 1u; j--) {
      let n = r.count[j - 1u];
      if (n > 0.0 && ((kOn && n >= topK) || (pOn && r.mass[j - 1u] >= q))) {
        next = j;
        break;
      }
    }
    if (next > 0u) {
      K = K | (next << sh);
      cK = u32(r.count[next - 1u]);
    }
    if (next < 3u) { cHi = u32(r.count[next]); }
  }
  return keyValue(K);
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let greedy = params.temperature <= 0.0;
  let invT = select(1.0 / params.temperature, 0.0, greedy);
  let am = argmaxPass(lid);
  let mx = bitcast<f32>(am.x);
  let argmax = select(am.y, 0u, am.y == NONE); // NONE: every logit was −inf
  if (greedy) {
    if (lid == 0u) { emit(argmax); }
    return;
  }
  var tMin = LOWEST;
  if (params.minP > 0.0) { tMin = mx + params.temperature * log(min(params.minP, 1.0)); }
  let thr = max(searchThreshold(lid, mx, invT), tMin);

  // Draw, phase A: kept mass per group segment (lanes stride the segment), then a scan over groups.
  let ng = WG / GS;
  let g = lid / GS;
  let n4 = dims.vHi - dims.vLo;
  let segLen = (n4 + ng - 1u) / ng;
  let segEnd = dims.vLo + min((g + 1u) * segLen, n4);
  var part = vec4(0.0);
  var w = dims.vLo + g * segLen + lid % GS;
  for (; w + 3u * GS < segEnd; w += 4u * GS) {
    let a = raw4(w);
    let b = raw4(w + GS);
    let c = raw4(w + 2u * GS);
    let d = raw4(w + 3u * GS);
    part += keptMass(fix4(w, a), thr, mx, invT) + keptMass(fix4(w + GS, b), thr, mx, invT);
    part += keptMass(fix4(w + 2u * GS, c), thr, mx, invT) + keptMass(fix4(w + 3u * GS, d), thr, mx, invT);
  }
  for (; w < segEnd; w += GS) { part += keptMass(load4(w), thr, mx, invT); }
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
  let u = f32(pcg(pcg(params.seed) + state.step) >> 8u) * (1.0 / 16777216.0) * kept;
  let owner = minOver(lid, select(NONE, lid, lid < ng && red[lid].x > u), ng);
  if (owner == NONE) {
    if (lid == 0u) { emit(argmax); } // only on non-finite sums
    return;
  }

  // Phase B: the owning segment, a tile of WG vec4s at a time: scan the tile, find the vec4 where
  // the running mass first exceeds u, and let its invocation walk the four lanes.
  var base = workgroupUniformLoad(&red[max(owner, 1u) - 1u]).x;
  if (owner == 0u) { base = 0.0; }
  let end = dims.vLo + min((owner + 1u) * segLen, n4);
  for (var t = dims.vLo + owner * segLen; t < end; t += WG) {
    let vt = t + lid;
    var s4 = 0.0;
    if (vt < end) { s4 = dot(keptMass(load4(vt), thr, mx, invT), vec4(1.0)); }
    workgroupBarrier();
    red[lid].x = s4;
    scan(lid, WG);
    var before = base;
    if (lid > 0u) { before = base + red[lid - 1u].x; }
    var hit = minOver(lid, select(NONE, lid, base + red[lid].x > u), WG);
    if (hit == NONE && t + WG >= end) {
      // u fell past this segment's mass by rounding: take its last kept token.
      let r = minOver(lid, select(NONE, WG - 1u - lid, s4 > 0.0), WG);
      if (r == NONE) {
        if (lid == 0u) { emit(argmax); }
        return;
      }
      hit = WG - 1u - r;
    }
    if (hit != NONE) {
      if (lid == hit) { walk(vt, before, u, thr, mx, invT, argmax); }
      return;
    }
    base = base + workgroupUniformLoad(&red[WG - 1u]).x;
  }
}
