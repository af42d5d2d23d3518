// LeanQuant_aff's affine grid search, one workgroup per (row, group); kernels/aff_search.ts states the
// semantics (quant/reference_grid.ts affSearch) and the run-collapsing shortcut, and builds this module.

override WG: u32 = 256u;
override MAXQ: u32 = 15u;     // 2^bits − 1
override CACHE: u32 = 1024u;  // columns staged in workgroup memory

struct Params {
  rows: u32, cols: u32, colStart: u32, groupCols: u32,
  nGroups: u32, groupIndex: u32, groupCount: u32, T: u32,
  t: u32, writeChoice: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> W: array<f32>;             // (rows, cols) f32
@group(0) @binding(2) var<storage, read> importance: array<f32>;    // (cols) a_c, same column order as W
@group(0) @binding(3) var<storage, read_write> out: array<vec2f>;   // (rows, nGroups) (scale, zero)
@group(0) @binding(4) var<storage, read_write> choice: array<u32>;  // (rows, nGroups) i·t + j, if writeChoice

var<workgroup> xs: array<f32, CACHE>;
var<workgroup> ws: array<f32, CACHE>;
var<workgroup> redE: array<f32, WG>;
var<workgroup> redI: array<u32, WG>;

fn zeroOf(i: u32, lo: f32, delta: f32, scale: f32) -> f32 {
  return clamp(round(-(lo + f32(i) * delta) / scale), 0.0, f32(MAXQ));
}

// Kahan-adds a 32-term partial sum into (total, comp).
fn kahan(acc: vec2f, part: f32) -> vec2f {
  let y = part - acc.y;
  let s = acc.x + y;
  return vec2f(s, (s - acc.x) - y);
}

fn errStaged(scale: f32, zero: f32, n: u32) -> f32 {
  let inv = 1.0 / scale;
  var acc = vec2f(0.0);
  for (var c0 = 0u; c0 < n; c0 += 32u) {
    var part = 0.0;
    for (var c = c0; c < min(c0 + 32u, n); c++) {
      let x = xs[c];
      let k = clamp(round(x * inv) + zero, 0.0, f32(MAXQ));
      let d = fma(scale, k - zero, -x);
      part = fma(ws[c] * d, d, part);
    }
    acc = kahan(acc, part);
  }
  return acc.x;
}

fn errStreamed(scale: f32, zero: f32, n: u32, base: u32, start: u32) -> f32 {
  let inv = 1.0 / scale;
  var acc = vec2f(0.0);
  for (var c0 = 0u; c0 < n; c0 += 32u) {
    var part = 0.0;
    for (var c = c0; c < min(c0 + 32u, n); c++) {
      let x = W[base + c];
      let k = clamp(round(x * inv) + zero, 0.0, f32(MAXQ));
      let d = fma(scale, k - zero, -x);
      part = fma(importance[start + c] * d, d, part);
    }
    acc = kahan(acc, part);
  }
  return acc.x;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let flat = wid.x + wid.y * nwg.x;
  if (flat >= params.rows * params.groupCount) { return; }
  let q = flat / params.rows;
  let row = flat - q * params.rows;
  let start = params.colStart + q * params.groupCols;
  let n = min(params.groupCols, params.cols - start);
  let base = row * params.cols + start;
  let staged = n <= CACHE;
  // The include-zero range, staging the set on the way.
  var lo = 0.0;
  var hi = 0.0;
  for (var c = lid; c < n; c += WG) {
    let x = W[base + c];
    lo = min(lo, x);
    hi = max(hi, x);
    if (staged) {
      xs[c] = x;
      ws[c] = importance[start + c];
    }
  }
  redE[lid] = lo;
  redI[lid] = bitcast<u32>(hi);
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (lid < s) {
      redE[lid] = min(redE[lid], redE[lid + s]);
      redI[lid] = bitcast<u32>(max(bitcast<f32>(redI[lid]), bitcast<f32>(redI[lid + s])));
    }
    workgroupBarrier();
  }
  lo = redE[0];
  hi = bitcast<f32>(redI[0]);
  workgroupBarrier(); // everyone has read the range before redE/redI are reused
  if (lo == 0.0 && hi == 0.0) {
    lo = -1.0;
    hi = 1.0;
  }
  let range = hi - lo;
  let delta = range / f32(params.T);
  let t = params.t;
  var bestE = bitcast<f32>(0x7f800000u);
  var bestIdx = 0xffffffffu;
  for (var m = lid; m < 2u * t - 1u; m += WG) {
    let scale = (range - f32(m) * delta) / f32(MAXQ);
    let iHi = min(m, t - 1u);
    var i = select(0u, m - (t - 1u), m > t - 1u);
    var z = zeroOf(i, lo, delta, scale);
    let zEnd = zeroOf(iHi, lo, delta, scale);
    loop {
      var e: f32;
      if (staged) { e = errStaged(scale, z, n); } else { e = errStreamed(scale, z, n, base, start); }
      let idx = i * t + (m - i);
      if (e < bestE || (e == bestE && idx < bestIdx)) {
        bestE = e;
        bestIdx = idx;
      }
      if (z == zEnd) { break; }
      // The next run starts at the first i' in (i, iHi] whose zero differs.
      var a = i + 1u;
      var b = iHi;
      while (a < b) {
        let mid = (a + b) / 2u;
        if (zeroOf(mid, lo, delta, scale) != z) { b = mid; } else { a = mid + 1u; }
      }
      i = a;
      z = zeroOf(i, lo, delta, scale);
    }
  }
  redE[lid] = bestE;
  redI[lid] = bestIdx;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s /= 2u) {
    if (lid < s) {
      let e = redE[lid + s];
      let k = redI[lid + s];
      if (e < redE[lid] || (e == redE[lid] && k < redI[lid])) {
        redE[lid] = e;
        redI[lid] = k;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let idx = redI[0];
    let i = idx / t;
    let scale = (range - f32(i + (idx - i * t)) * delta) / f32(MAXQ);
    let o = row * params.nGroups + params.groupIndex + q;
    out[o] = vec2f(scale, zeroOf(i, lo, delta, scale));
    if (params.writeChoice != 0u) { choice[o] = idx; }
  }
}
