// Grounding kernel: for each query (a generated answer's embedding) the `k` catalog rows nearest
// to it in squared L2 distance, nearest first; equal distances go to the smaller row index.
//
// One workgroup serves QB queries against the whole catalog, streamed through workgroup memory
// one tile of TR rows x CH columns at a time: each tile is read from global memory once
// (coalesced: consecutive threads read consecutive columns of a row) and used for all QB
// queries, whose matching CH columns sit beside it. The tile is stored column-major in vec4s, so
// thread t reads its row t four columns at a time, without bank conflicts, and accumulates that
// row's squared distances to all QB queries at once (one tile read serves QB distances). They
// are summed in f32 four columns per step; the CPU reference sums one column at a time, so the
// two may differ in the last bits.
//
// Once a tile's distances are complete they go to workgroup memory, where the 256 threads,
// regrouped as QB query lanes of ROWS row lanes, pick them up: thread (lq, lr) owns query
// `q0 + lq` and the catalog rows `lr, lr + ROWS, lr + 2 ROWS, ...`, and keeps their best k in a
// private sorted list. At the end the ROWS lists of each query are merged in workgroup memory:
// k rounds of a min-reduction over the lists' heads, the winner's thread moving its head on.
// No [n_queries, n_items] distance matrix is ever written to global memory.
//
// Bindings: params (uniform), table [n_items * dim] f32, queries [n_queries * dim] f32, hits
// [n_queries * k] (item, dist). The host guarantees 1 <= k <= min(K_MAX, n_items), dim >= 1 and
// finite inputs; workgroups are laid out 2-D (x + y * num_workgroups.x) when one dimension is
// not enough.

const QB: u32 = 4u; // queries per workgroup
const ROWS: u32 = 64u; // row lanes per query when selecting
const CH: u32 = 8u; // columns per tile
const TR: u32 = 256u; // catalog rows per tile: one per thread (= WG)
const WG: u32 = 256u; // QB * ROWS threads
const K_MAX: u32 = 64u;
const NONE: u32 = 0xffffffffu; // "no candidate": sorts after every real one

struct Params {
    n_items: u32,
    dim: u32,
    k: u32,
    n_queries: u32,
}

struct Hit {
    item: u32,
    dist: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> table: array<f32>;
@group(0) @binding(2) var<storage, read> queries: array<f32>;
@group(0) @binding(3) var<storage, read_write> hits: array<Hit>;

var<workgroup> tile: array<vec4<f32>, 512>; // (CH / 4) * TR, column-major: [column / 4][row]
var<workgroup> dist: array<f32, 1024>; // QB * TR: [query][row]
var<workgroup> qtile: array<vec4<f32>, 8>; // QB * CH / 4: [query][column / 4]
var<workgroup> red_d: array<f32, 256>; // WG: one candidate per thread while merging
var<workgroup> red_i: array<u32, 256>;

// (da, ia) comes before (db, ib): smaller distance, then smaller index; NONE comes last.
fn before(da: f32, ia: u32, db: f32, ib: u32) -> bool {
    if (ia == NONE) {
        return false;
    }
    if (ib == NONE) {
        return true;
    }
    return da < db || (da == db && ia < ib);
}

@compute @workgroup_size(256)
fn main(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let n = params.n_items;
    let dim = params.dim;
    let k = params.k;
    let nq = params.n_queries;
    let q0 = (wid.y * nwg.x + wid.x) * QB;
    if (q0 >= nq) {
        return; // a whole spare workgroup of the 2-D grid
    }
    let lq = t / ROWS;
    let lr = t % ROWS;
    let q = q0 + lq;
    let q_ok = q < nq;

    var best_d: array<f32, K_MAX>;
    var best_i: array<u32, K_MAX>;
    var cnt = 0u;

    for (var row0 = 0u; row0 < n; row0 += TR) {
        var acc = vec4<f32>(0.0); // thread t's row against the QB queries
        for (var c0 = 0u; c0 < dim; c0 += CH) {
            // Consecutive threads read consecutive columns of one row: coalesced. Columns past
            // `dim` (and rows past `n`) are zeros in both tiles, so they add exactly nothing.
            for (var e = t; e < TR * CH; e += WG) {
                let r = e / CH;
                let c = e % CH;
                var v = 0.0;
                if (row0 + r < n && c0 + c < dim) {
                    v = table[(row0 + r) * dim + c0 + c];
                }
                tile[(c / 4u) * TR + r][c % 4u] = v;
            }
            if (t < QB * CH) {
                let qq = q0 + t / CH;
                let c = c0 + t % CH;
                var v = 0.0;
                if (qq < nq && c < dim) {
                    v = queries[qq * dim + c];
                }
                qtile[t / 4u][t % 4u] = v;
            }
            workgroupBarrier();
            for (var c4 = 0u; c4 < CH / 4u; c4++) {
                let x = tile[c4 * TR + t];
                let d0 = qtile[c4] - x;
                let d1 = qtile[CH / 4u + c4] - x;
                let d2 = qtile[2u * CH / 4u + c4] - x;
                let d3 = qtile[3u * CH / 4u + c4] - x;
                acc += vec4<f32>(dot(d0, d0), dot(d1, d1), dot(d2, d2), dot(d3, d3));
            }
            workgroupBarrier();
        }
        dist[t] = acc.x;
        dist[TR + t] = acc.y;
        dist[2u * TR + t] = acc.z;
        dist[3u * TR + t] = acc.w;
        workgroupBarrier();
        // Thread (lq, lr) takes the tile's rows lr, lr + ROWS, ... for its query. It meets its rows
        // in increasing index order, so a later equal distance never displaces an earlier one: its
        // list stays ordered by (distance, index).
        for (var i = 0u; i < TR / ROWS; i++) {
            let row = row0 + i * ROWS + lr;
            let d = dist[lq * TR + i * ROWS + lr];
            if (q_ok && row < n && (cnt < k || before(d, row, best_d[k - 1u], best_i[k - 1u]))) {
                var j = min(cnt, k - 1u);
                loop {
                    if (j == 0u || !before(d, row, best_d[j - 1u], best_i[j - 1u])) {
                        break;
                    }
                    best_d[j] = best_d[j - 1u];
                    best_i[j] = best_i[j - 1u];
                    j -= 1u;
                }
                best_d[j] = d;
                best_i[j] = row;
                cnt = min(cnt + 1u, k);
            }
        }
    }

    // Merge the ROWS sorted lists of each query: k rounds of picking the best head.
    let seg = lq * ROWS;
    var head = 0u;
    for (var out = 0u; out < k; out++) {
        if (head < cnt) {
            red_d[t] = best_d[head];
            red_i[t] = best_i[head];
        } else {
            red_d[t] = 0.0;
            red_i[t] = NONE;
        }
        workgroupBarrier();
        for (var s = ROWS / 2u; s > 0u; s >>= 1u) {
            if (lr < s && before(red_d[t + s], red_i[t + s], red_d[t], red_i[t])) {
                red_d[t] = red_d[t + s];
                red_i[t] = red_i[t + s];
            }
            workgroupBarrier();
        }
        let win_i = red_i[seg];
        let win_d = red_d[seg];
        // Row indices are unique within a query, so only the owner of the winner matches.
        if (head < cnt && best_i[head] == win_i) {
            head += 1u;
        }
        if (lr == 0u && q_ok) {
            hits[q * k + out] = Hit(win_i, win_d);
        }
        workgroupBarrier(); // everyone has read the winner before the next round overwrites it
    }
}
