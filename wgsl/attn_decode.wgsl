// Attention of a few queries (decode) split over the keys, first pass (flash decoding; see
// attn/common.wgsl for what is computed and how rows are numbered): workgroup (wg.x, wg.y)
// takes the chunks_per_split chunks of CHUNK positions from CHUNK * chunks_per_split * wg.x
// and rows ROWS * b .. + ROWS of key/value head g, with wg.y = b * n_kv_heads + g, and writes
// for each row its partial softmax over those positions: the maximum m, the sum l of
// exp2(s - m) and the unnormalized output acc = sum exp2(s - m) V. attn_combine.wgsl merges
// the n_splits partials of a row. The host bounds n_splits (more chunks per split at long
// contexts), so the partials and their merge stay small.
//
// A decode step has few rows and few positions per workgroup, so what binds it is the length
// of each thread's chain of dependent instructions, not bytes or FLOPs: every phase spreads
// its work over all WG_SIZE threads, and a chunk costs two barriers.
//   scores:  thread (j, part) dots the query rows with octs part, part + PARTS, .. of the key
//            at position j (the PARTS threads of a position read its key row together) and
//            leaves ROWS partial sums in workgroup memory;
//   softmax: thread (r, j) adds the PARTS partials of score (r, j) and masks it;
//   values:  thread (r, d) takes the chunk's maximum of row r, raises the running maximum
//            (rescaling what earlier chunks summed) and accumulates dims 4d .. 4d + 4 of row r
//            over the chunk's values.
// Positions past the batch are read clamped to the last one (finite, masked); positions before
// a row's sliding window are masked too (whole chunks before them are skipped). Sinks are no
// partial's business: attn_combine adds each row's once.
//
// With attn/seq_table.wgsl the batch's tokens are of different sequences (SEQ_TABLE): wg.z is
// the token, whose keys start at its own row of the bound arena and whose rows are the group's
// query heads of its key/value head (wg.y = b * n_kv_heads + g with b < ceil(group / ROWS)). A
// split past the token's last position sees no key: the chunk loop does not run and the
// workgroup writes an empty partial (m = MASKED, l = 0), uniformly.
//
// Every loop has a constant trip count or a bound uniform over the workgroup; every workgroup
// and per-thread array index is in range by construction; cache indices are clamped to
// positions the batch wrote.
//
// Consts: WG_SIZE, HEAD_DIM, ROWS, CHUNK (ROWS * CHUNK = WG_SIZE: one thread per score).
// Fragments: attn/common.wgsl (MASKED, Seq, one_seq, row_first_key, row_sees, out_row),
//   kv/<type>.wgsl (KvOct, kv_oct, KvQuad, kv_quad), attn/seq_one.wgsl or attn/seq_table.wgsl
//   (SEQ_TABLE, seq_entry).
// Params: AttnParams, declared by the generator from codegen/src/params.rs.

const_assert HEAD_DIM % 8u == 0u;
const_assert ROWS * CHUNK == WG_SIZE;
const_assert WG_SIZE % CHUNK == 0u;
const_assert 0u == (WG_SIZE / CHUNK) % 4u;

@group(0) @binding(0) var<uniform> params: AttnParams;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k_cache: array<KvOct>;
@group(0) @binding(3) var<storage, read> v_cache: array<KvQuad>;
// Per (out row, split): acc as HEAD_DIM / 4 vec4s, and (m, l).
@group(0) @binding(4) var<storage, read_write> part_acc: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> part_ml: array<vec2<f32>>;

const Q4: u32 = HEAD_DIM / 4u;
const OCTS: u32 = HEAD_DIM / 8u;
// Threads per position in the scores, and octs of the key row each of them reads.
const PARTS: u32 = WG_SIZE / CHUNK;
const PART_OCTS: u32 = (OCTS + PARTS - 1u) / PARTS;
// Output vec4s (row, 4 dims) per thread in the values phase.
const ITEMS: u32 = (ROWS * Q4 + WG_SIZE - 1u) / WG_SIZE;

var<workgroup> q_tile: array<vec4<f32>, ROWS * Q4>; // [row][dim], pre-scaled
// [row][position][part], a score's PARTS partial sums in PARTS / 4 vec4s: the thread that adds
// them reads whole vec4s, with no bank conflicts between the positions of a subgroup.
var<workgroup> partial: array<vec4<f32>, ROWS * CHUNK * PARTS / 4u>;
var<workgroup> scores: array<f32, ROWS * CHUNK>; // [row][position]

// The sequence of workgroup z's rows: the whole batch, or token z alone (SEQ_TABLE).
fn workgroup_seq(z: u32) -> Seq {
    if SEQ_TABLE {
        let e = seq_entry(z);
        return Seq(e.y, 1u, params.group, e.x, z);
    }
    return one_seq();
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let seq = workgroup_seq(wg.z);
    let split = wg.x;
    let g = wg.y % params.n_kv_heads;
    let r0 = (wg.y / params.n_kv_heads) * ROWS;
    // Positions the sequence wrote: 0 .. pos0 + n_tokens, from cache row cache_row0.
    let last_key = seq.pos0 + seq.n_tokens - 1u;
    let kv_octs = params.n_kv_heads * OCTS;
    let kv_quads = params.n_kv_heads * Q4;
    let first = split * params.chunks_per_split * CHUNK;

    for (var i = li; i < ROWS * Q4; i += WG_SIZE) {
        let r = r0 + i / Q4;
        var v = vec4<f32>(0.0);
        if r < seq.n_rows {
            v = q[out_row(seq, g, r) * Q4 + i % Q4] * params.scale;
        }
        q_tile[i] = v;
    }

    // Scores phase: position j of the chunk, key octs part + PARTS * i.
    let j = li / PARTS;
    let part = li % PARTS;
    // Softmax phase: score (sr, sj).
    let sr = li / CHUNK;
    let sj = li % CHUNK;
    // Values phase: item i is (row, dims) = ((li + WG_SIZE * i) / Q4, (li + WG_SIZE * i) % Q4);
    // items past ROWS * Q4 compute a clamped duplicate and are not written.
    var acc: array<vec4<f32>, ITEMS>;
    var l: array<f32, ITEMS>;
    var running: array<f32, ITEMS>;
    for (var i = 0u; i < ITEMS; i++) {
        acc[i] = vec4<f32>(0.0);
        l[i] = 0.0;
        running[i] = MASKED;
    }
    workgroupBarrier();

    // Chunks wholly before the first row's sliding window hold no key any row sees.
    let skipped = (max(row_first_key(seq, r0), first) - first) / CHUNK;
    for (var c = skipped; c < params.chunks_per_split && first + c * CHUNK <= last_key; c++) {
        let j0 = first + c * CHUNK;
        let key_at = (seq.cache_row0 + min(j0 + j, last_key)) * kv_octs + g * OCTS;
        var s: array<f32, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            s[r] = 0.0;
        }
        for (var i = 0u; i < PART_OCTS; i++) {
            let o = part + PARTS * i;
            if o < OCTS {
                let k = kv_oct(k_cache[key_at + o]);
                for (var r = 0u; r < ROWS; r++) {
                    s[r] += dot(q_tile[r * Q4 + 2u * o], k[0])
                        + dot(q_tile[r * Q4 + 2u * o + 1u], k[1]);
                }
            }
        }
        for (var r = 0u; r < ROWS; r++) {
            partial[((r * CHUNK + j) * PARTS + part) / 4u][part % 4u] = s[r];
        }
        // Also: the values phase of the previous chunk is done with `scores`.
        workgroupBarrier();

        var score = 0.0;
        for (var p = 0u; p < PARTS / 4u; p++) {
            let v = partial[(sr * CHUNK + sj) * (PARTS / 4u) + p];
            score += (v.x + v.y) + (v.z + v.w);
        }
        scores[sr * CHUNK + sj] = select(MASKED, score, row_sees(seq, r0 + sr, j0 + sj));
        // Also: the next chunk's scores phase may rewrite `partial`.
        workgroupBarrier();

        for (var i = 0u; i < ITEMS; i++) {
            let item = min(li + WG_SIZE * i, ROWS * Q4 - 1u);
            let r = item / Q4;
            let d = item % Q4;
            var m = running[i];
            for (var p = 0u; p < CHUNK; p++) {
                m = max(m, scores[r * CHUNK + p]);
            }
            let rescale = exp2(running[i] - m);
            running[i] = m;
            var a = acc[i] * rescale;
            var sum = l[i] * rescale;
            for (var p = 0u; p < CHUNK; p++) {
                let sc = scores[r * CHUNK + p];
                let w = select(exp2(sc - m), 0.0, sc == MASKED);
                let v = kv_quad(v_cache[(seq.cache_row0 + min(j0 + p, last_key)) * kv_quads + g * Q4 + d]);
                a = fma(vec4<f32>(w), v, a);
                sum += w;
            }
            acc[i] = a;
            l[i] = sum;
        }
    }

    for (var i = 0u; i < ITEMS; i++) {
        let item = li + WG_SIZE * i;
        let r = item / Q4;
        let d = item % Q4;
        if item < ROWS * Q4 && r0 + r < seq.n_rows {
            let at = out_row(seq, g, r0 + r) * params.n_splits + split;
            part_acc[at * Q4 + d] = acc[i];
            if d == 0u {
                part_ml[at] = vec2<f32>(running[i], l[i]);
            }
        }
    }
}
