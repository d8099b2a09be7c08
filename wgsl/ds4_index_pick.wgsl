// The lightning indexer's top-k (deepseek4, ratio-4 layers): token t keeps the `top_k`
// visible rows of highest score, ties to the earlier row, listed in row order in
// picked[t][0..top_k] (NO_ROW after the last where the token sees fewer): row b is kept when
//   b < visible(t) && #{c < visible(t) : s_c > s_b || (s_c == s_b && c < b)} < top_k
// with visible(t) = (pos0 + t + 1) / ratio. A workgroup per token finds the k-th largest score
// by a radix select on the scores' order-preserving bits, 8 bits a pass: each pass counts, in
// a bin per thread, the next 8 bits of the rows that match the bits found so far, and the bin
// where the count from the top reaches the rows still wanted gives them. Then it keeps the rows
// above that score and the earliest of those equal to it. Six reads of the visible rows in
// all, where ranking each row against every other one read them `visible` times (at Flash's
// 1M context, 250K rows a token), and ds4_attend reads top_k rows, not a mask of them all.
//
// Every loop bound and barrier is uniform over the workgroup (params and the workgroup id).
//
// Consts: WG_SIZE (256: a bin per thread).
// Fragments: grid.wgsl (GridGroup, linear_group).
// Params: IndexParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: IndexParams;
@group(0) @binding(1) var<storage, read> scores: array<f32>;
@group(0) @binding(2) var<storage, read_write> picked: array<u32>;

const NO_ROW: u32 = 0xffffffffu;

var<workgroup> bins: array<atomic<u32>, WG_SIZE>;
// The bins' counts summed from the top (bin d and above); later, the running count of rows
// equal to the k-th score over the threads' stretches.
var<workgroup> sums: array<u32, WG_SIZE>;
var<workgroup> found_digit: u32;
var<workgroup> found_above: u32;

// The unsigned integer whose order is the score's: sign bit set for positive values, every
// bit flipped for negative ones; -0 counts as +0 (the scores compare equal).
fn order_key(s: f32) -> u32 {
    let bits = select(bitcast<u32>(s), 0u, s == 0.0);
    return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}

// sums[li] += every sums[j] for j > li (from_top) or j < li (not): a Hillis-Steele scan.
fn workgroup_scan(li: u32, from_top: bool) {
    for (var off = 1u; off < WG_SIZE; off <<= 1u) {
        var v = sums[li];
        if from_top && li + off < WG_SIZE {
            v += sums[li + off];
        }
        if !from_top && li >= off {
            v += sums[li - off];
        }
        workgroupBarrier();
        sums[li] = v;
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let t = linear_group(grid);
    if t >= params.n_tokens {
        return;
    }
    let visible = min((params.pos0 + t + 1u) / params.ratio, params.n_comp);
    let row = t * params.n_comp;
    let list = t * params.top_k;
    if visible <= params.top_k {
        for (var i = li; i < params.top_k; i += WG_SIZE) {
            picked[list + i] = select(NO_ROW, i, i < visible);
        }
        return;
    }
    // The k-th largest key's bits found so far (those under `mask`), and how many rows of
    // keys with those bits still belong to the top k (at least 1, at most as many as match).
    var prefix = 0u;
    var mask = 0u;
    var need = params.top_k;
    for (var round = 0u; round < 4u; round++) {
        let shift = 24u - 8u * round;
        atomicStore(&bins[li], 0u);
        workgroupBarrier();
        for (var b = li; b < visible; b += WG_SIZE) {
            let key = order_key(scores[row + b]);
            if (key & mask) == prefix {
                atomicAdd(&bins[(key >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        sums[li] = atomicLoad(&bins[li]);
        workgroupBarrier();
        workgroup_scan(li, true);
        // The one digit whose count from the top first reaches `need`.
        var higher = 0u;
        if li + 1u < WG_SIZE {
            higher = sums[li + 1u];
        }
        if sums[li] >= need && higher < need {
            found_digit = li;
            found_above = higher;
        }
        workgroupBarrier();
        need -= found_above;
        prefix |= found_digit << shift;
        mask |= 255u << shift;
        workgroupBarrier();
    }
    // List the rows above the k-th key and the `need` earliest equal to it, in row order:
    // each thread walks a stretch of consecutive rows, and scans of the stretches' counts give
    // where its equal rows rank and where its kept rows go in the list.
    let stretch = (visible + WG_SIZE - 1u) / WG_SIZE;
    let first = min(li * stretch, visible);
    let last = min(first + stretch, visible);
    var equal = 0u;
    var greater = 0u;
    for (var b = first; b < last; b++) {
        let key = order_key(scores[row + b]);
        equal += select(0u, 1u, key == prefix);
        greater += select(0u, 1u, key > prefix);
    }
    sums[li] = equal;
    workgroupBarrier();
    workgroup_scan(li, false);
    var rank = sums[li] - equal;
    let kept = greater + min(equal, need - min(need, rank));
    sums[li] = kept;
    workgroupBarrier();
    workgroup_scan(li, false);
    var at = list + sums[li] - kept;
    for (var b = first; b < last; b++) {
        let key = order_key(scores[row + b]);
        var keep = key > prefix;
        if key == prefix {
            keep = rank < need;
            rank += 1u;
        }
        if keep {
            picked[at] = b;
            at += 1u;
        }
    }
}
