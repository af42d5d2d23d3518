/**
 * The WGSL that attention.ts (a contiguous KV cache) and paged_attention.ts (a paged pool) share: the
 * `override` shape constants, workgroup memory, the tiled online-softmax walk over a span of positions
 * (scores for the G query heads of one KV head, then acc += p·V), and the epilogue that merges the
 * partitions and writes the output or a split's partial (m, l, acc). The two kernels differ only in how a
 * tile position finds its K/V row ({@link KvAccess}), in their bindings and in how a workgroup finds its row
 * and span; see attention.ts for the algorithm.
 */

import { unroll } from "../core/mod.ts";

/** Split spans are multiples of this many positions (the host sizes split counts with it too). */
export const SPLIT_ALIGN = 32;

/**
 * WGSL: `splitSpan(len, window, n, split)`, the positions [begin, end) that split `split` of n walks of a row
 * that sees positions [lo, len), lo the start of its sliding window (0 without): spans of one length, a
 * multiple of SPLIT_ALIGN, from the row's own length only (so a row's sums do not depend on its batch).
 * A split past the row's positions comes out empty (end ≤ begin). Every attention kernel splits this way.
 */
export const SPLIT_SPAN_WGSL = /* wgsl */ `
const SPLIT_ALIGN = ${SPLIT_ALIGN}u;
fn splitSpan(len: u32, window: u32, n: u32, split: u32) -> vec2u {
  let lo = select(0u, len - window, window > 0u && len > window);
  let chunk = (len - lo + n * SPLIT_ALIGN - 1u) / (n * SPLIT_ALIGN) * SPLIT_ALIGN;
  let begin = lo + split * chunk;
  return vec2u(begin, min(begin + chunk, len));
}`;

/** How the shared walk reaches K and V. */
export interface KvAccess {
  /** Leading parameters of scoreTile that `prelude` uses (e.g. "slot: u32, "), or "". */
  scoreParams: string;
  /** WGSL at the top of scoreTile (e.g. looking up the pool row of each tile position), or "". */
  prelude: string;
  /** The K/V row index of tile position `j` (a WGSL expression; `start` is the tile's first position). */
  row: (j: string) => string;
  /** Loads of the vec4 at element index `i` of K and of V, as f32. */
  loadK: (i: string) => string;
  loadV: (i: string) => string;
  /**
   * K rows staged in workgroup memory, each tile's with coalesced loads, before its scores: `wgsl` runs in
   * scoreTile after the prelude, by every invocation (it fills the stage and ends with a barrier), and
   * `loadK(j, d)` is the vec4 at column d of tile position j's K row, as f32, equal to what the plain
   * `loadK` reads (so the scores keep their bits). Absent: each score reads its K row from the pool.
   */
  stage?: { wgsl: string; loadK: (j: string, d: string) => string };
}

/** The override constants, workgroup memory and the tile functions scoreTile and accumulateTile. */
export function attentionTileWgsl(kv: KvAccess): string {
  const v = (j: string) => kv.loadV(`${kv.row(j)} * stride + col`);
  const k = (i: string) => kv.stage ? kv.stage.loadK("js", i) : kv.loadK(`kRow + ${i}`);
  return /* wgsl */ `
override WG: u32 = 256u;   // invocations per workgroup
override HD4: u32 = 2u;    // headDim / 4
override G: u32 = 1u;      // query heads per KV head
override QN: u32 = 2u;     // G · HD4: the vec4 outputs of one workgroup
override TILE: u32 = 128u; // positions per tile: a power of two with G · TILE ≤ WG
override NPART: u32 = 1u;  // partitions of a tile's positions in acc += p·V: a power of two, NPART · QN ≤ WG
override R: u32 = 1u;      // vec4 outputs per invocation (> 1 only when QN > WG, then NPART = 1)

const MAX_R = 4u;
${SPLIT_SPAN_WGSL}
const NEG = -1.0e30; // stands in for −∞: WGSL may assume no infinities, and e^(NEG − m) is 0

var<workgroup> qs: array<vec4<f32>, QN>;   // the G queries, pre-scaled by 1/√headDim
var<workgroup> sc: array<f32, WG>;         // [g·TILE + j]: score, then probability
var<workgroup> red: array<f32, WG>;        // reduction scratch, same indexing
var<workgroup> mW: array<f32, G>;          // running max per head
var<workgroup> lW: array<f32, G>;          // running sum per head
var<workgroup> alphaW: array<f32, G>;      // this tile's rescale e^(m_old − m_new) per head
var<workgroup> accW: array<vec4<f32>, WG>; // [part·QN + o]: partition merge

// Tree max over each head's TILE entries of red; the result lands in red[g·TILE].
fn reduceMax(lid: u32) {
  let j = lid % TILE;
  for (var stride = TILE / 2u; stride > 0u; stride /= 2u) {
    if (lid < G * TILE && j < stride) { red[lid] = max(red[lid], red[lid + stride]); }
    workgroupBarrier();
  }
}

// Scores of positions [start, start + n) for the G heads into sc[g·TILE + j] (head g, position start + j);
// the running max and this tile's rescale per head; then sc holds e^(s − m). Invocation j·G + g computes
// score (g, j): the G heads of a position are neighbours, so one load instruction of a warp touches 32 / G
// K rows (each read by G invocations at once) rather than 32, and every score's sum keeps its order.
fn scoreTile(lid: u32, ${kv.scoreParams}kvh: u32, start: u32, n: u32) {
  let g = lid / TILE;
  let j = lid % TILE;${kv.prelude}${kv.stage?.wgsl ?? ""}
  if (lid < G * TILE) {
    let gs = lid % G;
    let js = lid / G;
    var s = NEG;
    if (js < n) {${kv.stage ? "" : `\n      let kRow = ${kv.row("js")} * params.nKvHeads * HD4 + kvh * HD4;`}
      s = 0.0;
      // Eight K loads issued before their dots: one at a time, each trip waited on the memory (the score
      // is latency-bound at decode). The sum's order is the one-at-a-time order.
      var d = 0u;
      for (; d + 8u <= HD4; d += 8u) {
        ${unroll(8, (i) => `let k${i} = ${k(`d + ${i}u`)};`, "\n        ")}
        ${unroll(8, (i) => `s += dot(qs[gs * HD4 + d + ${i}u], k${i});`, "\n        ")}
      }
      for (; d < HD4; d++) { s += dot(qs[gs * HD4 + d], ${k("d")}); }
      if (params.softcap > 0.0) { s = softcap(s, params.softcap); }
    }
    sc[gs * TILE + js] = s;
    red[gs * TILE + js] = s;
  }
  workgroupBarrier();
  reduceMax(lid);
  if (lid < G) {
    let mOld = mW[lid];
    let mNew = max(mOld, red[lid * TILE]);
    alphaW[lid] = exp(mOld - mNew);
    mW[lid] = mNew;
  }
  workgroupBarrier();
  if (lid < G * TILE) { sc[lid] = select(0.0, exp(sc[lid] - mW[g]), j < n); }
  workgroupBarrier();
}

// Per output slot: the unnormalised output and the softmax sum over this slot's partition.
struct Acc { v: array<vec4<f32>, MAX_R>, l: array<f32, MAX_R> }

// acc ← acc · alpha + Σ_j p_j v[row(j)] (and l likewise with Σ_j p_j) for this invocation's outputs;
// partition "part" of NPART takes positions j ≡ part (mod NPART), coalesced along headDim.
// Summing l here, per slot, saves a second tree reduction per tile.
fn accumulateTile(lid: u32, kvh: u32, start: u32, n: u32, acc: ptr<function, Acc>) {
  for (var r = 0u; r < MAX_R; r++) {
    let slot = lid + r * WG;
    let part = slot / QN;
    if (r < R && part < NPART) {
      let o = slot % QN;
      let g = o / HD4;
      let stride = params.nKvHeads * HD4;
      let col = kvh * HD4 + o % HD4; // this output's column of a K/V row
      let s0 = g * TILE;
      var a = (*acc).v[r] * alphaW[g];
      var l = (*acc).l[r] * alphaW[g];
      var j = part;
      // Independent V loads keep several rows in flight (the loop is latency-bound): eight per trip, summed
      // as two trips of four, so the order of the sums is the four-at-a-time one.
      for (; j + 7u * NPART < n; j += 8u * NPART) {
        ${unroll(8, (i) => `let v${i} = ${v(i === 0 ? "j" : `(j + ${i}u * NPART)`)};`, "\n        ")}
        ${
    unroll(2, (h) => {
      const at = (i: number) => `sc[s0 + j${i ? ` + ${i}u * NPART` : ""}]`;
      const [a, b, c, d] = [0, 1, 2, 3].map((i) => 4 * h + i);
      return `let p${h} = vec4(${at(a)}, ${at(b)}, ${at(c)}, ${at(d)});
        a += p${h}.x * v${a} + p${h}.y * v${b} + p${h}.z * v${c} + p${h}.w * v${d};
        l += p${h}.x + p${h}.y + p${h}.z + p${h}.w;`;
    }, "\n        ")
  }
      }
      for (; j + 3u * NPART < n; j += 4u * NPART) {
        let va = ${v("j")};
        let vb = ${v("(j + NPART)")};
        let vc = ${v("(j + 2u * NPART)")};
        let vd = ${v("(j + 3u * NPART)")};
        let p = vec4(sc[s0 + j], sc[s0 + j + NPART], sc[s0 + j + 2u * NPART], sc[s0 + j + 3u * NPART]);
        a += p.x * va + p.y * vb + p.z * vc + p.w * vd;
        l += p.x + p.y + p.z + p.w;
      }
      for (; j < n; j += NPART) {
        a += sc[s0 + j] * ${v("j")};
        l += sc[s0 + j];
      }
      (*acc).v[r] = a;
      (*acc).l[r] = l;
    }
  }
}
`;
}

/**
 * The end of main, after the walk: sums the partitions, publishes each head's sum, runs `beforeOut` (WGSL,
 * e.g. a padding row's override), then writes out = acc / l when the row has one split, else the split's
 * partial acc and (m, l) at stride `cap` splits per (row, head). Needs t, kvh, split, qRow and acc in scope.
 */
export function attentionEpilogueWgsl(o: { nSplits: string; cap: string; beforeOut?: string }): string {
  return /* wgsl */ `
  if (NPART > 1u) { // sum the partitions: accW and red at [part·QN + o]
    accW[lid] = acc.v[0];
    red[lid] = acc.l[0];
    workgroupBarrier();
    for (var stride = NPART / 2u; stride > 0u; stride /= 2u) {
      if (lid / QN < stride) {
        accW[lid] += accW[lid + stride * QN];
        red[lid] += red[lid + stride * QN];
      }
      workgroupBarrier();
    }
    acc.v[0] = accW[lid];
    acc.l[0] = red[lid];
  }
  for (var r = 0u; r < MAX_R; r++) { // every column of a head has its sum; column 0 publishes it
    let o = lid + r * WG;
    if (r < R && o < QN && o % HD4 == 0u) { lW[o / HD4] = acc.l[r]; }
  }
  workgroupBarrier();${o.beforeOut ?? ""}
  let nHeads = params.nKvHeads * G;
  for (var r = 0u; r < MAX_R; r++) {
    let o = lid + r * WG;
    if (r < R && o < QN) {
      let g = o / HD4;
      if (${o.nSplits} == 1u) {
        out[qRow + o] = acc.v[r] / lW[g];
      } else {
        partAcc[((t * nHeads + kvh * G + g) * ${o.cap} + split) * HD4 + o % HD4] = acc.v[r];
      }
    }
  }
  if (${o.nSplits} > 1u && lid < G) {
    partMl[(t * nHeads + kvh * G + lid) * ${o.cap} + split] = vec2(mW[lid], lW[lid]);
  }
`;
}
