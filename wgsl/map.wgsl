// Routing ids (T, K) -> per-expert spans, the expert-major list of pair ids p = t * K + k, and
// the compact work list of token tiles: one item (expert, first token) per TILE_N tokens of
// every non-empty expert, plus the indirect dispatch arguments of the matmuls that walk it.
//
// Three entry points run in order over one bind group; the host zeroes `chunk_counts` first.
//   count: per chunk of WG_SIZE pairs, each pair's rank among the earlier pairs of its chunk
//          with the same expert, and the count of each (chunk, expert).
//   scan:  one workgroup: per expert, the exclusive prefix of its counts over chunks (in place)
//          and its span (offset, count) in the list; the work list; the dispatch arguments
//          (items, row_groups[slot], 1) of each slot.
//   fill:  list[offset + chunk prefix + rank] = p.
// So the list is token-ascending within each expert and the map is deterministic. (Results
// would be bitwise identical without that: every output element is one fixed-order dot
// product whatever the list order; the order buys locality.) Ids >= n_experts are skipped.
// Every loop has a constant trip count or a uniform bound (the host may run this module
// without naga's loop guards); every workgroup-memory index is in range by construction.
//
// Consts: WG_SIZE, TILE_N, DISPATCH_SLOTS.
// Params: MapParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: MapParams;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read_write> chunk_counts: array<u32>;
@group(0) @binding(3) var<storage, read_write> ranks: array<u32>;
@group(0) @binding(4) var<storage, read_write> experts: array<vec2<u32>>;
@group(0) @binding(5) var<storage, read_write> list: array<u32>;
@group(0) @binding(6) var<storage, read_write> items: array<vec2<u32>>;
@group(0) @binding(7) var<storage, read_write> dispatch: array<u32>;

const_assert DISPATCH_SLOTS == 4u;

const NO_EXPERT: u32 = 0xffffffffu;

var<workgroup> chunk_experts: array<u32, WG_SIZE>;
var<workgroup> scan_pairs: array<u32, WG_SIZE>;
var<workgroup> scan_items: array<u32, WG_SIZE>;

fn expert_of(p: u32) -> u32 {
    if p < params.n_pairs {
        let e = ids[p];
        if e < params.n_experts {
            return e;
        }
    }
    return NO_EXPERT;
}

@compute @workgroup_size(WG_SIZE)
fn count(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let p = wg.x * WG_SIZE + li;
    let e = expert_of(p);
    chunk_experts[li] = e;
    workgroupBarrier();
    if e == NO_EXPERT {
        return;
    }
    var rank = 0u;
    var total = 0u;
    for (var j = 0u; j < WG_SIZE; j++) {
        let same = u32(chunk_experts[j] == e);
        total += same;
        rank += select(0u, same, j < li);
    }
    ranks[p] = rank;
    if rank == 0u {
        chunk_counts[wg.x * params.n_experts + e] = total;
    }
}

@compute @workgroup_size(WG_SIZE)
fn scan(@builtin(local_invocation_index) li: u32) {
    // Running totals of the rounds before, identical on every thread.
    var pair_base = 0u;
    var item_base = 0u;
    for (var e0 = 0u; e0 < params.n_experts; e0 += WG_SIZE) {
        let e = e0 + li;
        var n = 0u;
        if e < params.n_experts {
            // Eight chunks per round: their loads are independent, so a round costs one memory
            // round trip instead of eight (this serial walk dominates the map's time).
            let stride = params.n_experts;
            var c = 0u;
            for (; c + 8u <= params.n_chunks; c += 8u) {
                let i = c * stride + e;
                var v: array<u32, 8>;
                for (var j = 0u; j < 8u; j++) {
                    v[j] = chunk_counts[i + j * stride];
                }
                for (var j = 0u; j < 8u; j++) {
                    chunk_counts[i + j * stride] = n;
                    n += v[j];
                }
            }
            for (; c < params.n_chunks; c++) {
                let i = c * stride + e;
                let v = chunk_counts[i];
                chunk_counts[i] = n;
                n += v;
            }
        }
        let tiles = (n + TILE_N - 1u) / TILE_N;
        scan_pairs[li] = n;
        scan_items[li] = tiles;
        workgroupBarrier();
        // Inclusive Hillis-Steele scan of both columns.
        for (var s = 1u; s < WG_SIZE; s <<= 1u) {
            var a = scan_pairs[li];
            var b = scan_items[li];
            if li >= s {
                a += scan_pairs[li - s];
                b += scan_items[li - s];
            }
            workgroupBarrier();
            scan_pairs[li] = a;
            scan_items[li] = b;
            workgroupBarrier();
        }
        if e < params.n_experts {
            experts[e] = vec2<u32>(pair_base + scan_pairs[li] - n, n);
            let first_item = item_base + scan_items[li] - tiles;
            for (var i = 0u; i < tiles; i++) {
                items[first_item + i] = vec2<u32>(e, i * TILE_N);
            }
        }
        pair_base += scan_pairs[WG_SIZE - 1u];
        item_base += scan_items[WG_SIZE - 1u];
        workgroupBarrier();
    }
    if li < DISPATCH_SLOTS {
        dispatch[3u * li] = item_base;
        dispatch[3u * li + 1u] = params.row_groups[li];
        dispatch[3u * li + 2u] = 1u;
    }
}

@compute @workgroup_size(WG_SIZE)
fn fill(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let p = wg.x * WG_SIZE + li;
    let e = expert_of(p);
    if e == NO_EXPERT {
        return;
    }
    list[experts[e].x + chunk_counts[wg.x * params.n_experts + e] + ranks[p]] = p;
}
