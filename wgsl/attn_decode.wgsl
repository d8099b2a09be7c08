// Attention of a few queries (decode) split over the keys, first pass (flash decoding; see
// attn/common.wgsl for what is computed and how rows are numbered): workgroup (wg.x, wg.y)
// takes the chunks_per_split chunks of CHUNK positions from CHUNK * chunks_per_split * wg.x
// and rows ROWS * b .. + ROWS of key/value head g, with wg.y = b * n_kv_heads + g, and writes
// for each row its partial softmax over those positions: the maximum m, the sum l of
// exp2(s - m) and the unnormalized output acc = sum exp2(s - m) V. attn_combine.wgsl merges
// the n_splits partials of a row. The host bounds n_splits (more chunks per split at long
// contexts), so the partials and their merge stay small.
//
// Per chunk: thread (oct, row group) first loads its value octs (dims 8 * oct .. + 8 of every
// position of the chunk) into registers, so that they are in flight with the keys: a chunk
// costs one round trip to memory, not one per position. Thread j scores position j of the
// chunk against every row (its key row read once, as octs, the pre-scaled queries from
// workgroup memory); the row maxima come from a workgroup reduction (subgroups first where the
// key says so) and raise the running maxima, rescaling what earlier chunks summed; the weights
// go to workgroup memory; then thread (oct, row group) accumulates its rows over the chunk
// from its registers. Positions past the batch are read clamped to the last one (finite,
// masked).
//
// Every loop has a constant trip count or a bound uniform over the workgroup; every workgroup
// and per-thread array index is in range by construction; cache indices are clamped to
// positions the batch wrote.
//
// Consts: WG_SIZE (= CHUNK), HEAD_DIM, ROWS, ROW_GROUPS, ROWS_PER_THREAD.
// Fragments: attn/common.wgsl (MASKED, row_keys, out_row), kv/<type>.wgsl (KvOct,
//   kv_oct), reduce/<kind>.wgsl (sub_max, sub_leader).
// Params: AttnParams, declared by the generator from codegen/src/params.rs.

const_assert HEAD_DIM % 8u == 0u;
const_assert ROW_GROUPS * (HEAD_DIM / 8u) <= WG_SIZE;
const_assert ROW_GROUPS * ROWS_PER_THREAD >= ROWS;

@group(0) @binding(0) var<uniform> params: AttnParams;
@group(0) @binding(1) var<storage, read> q: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> k_cache: array<KvOct>;
@group(0) @binding(3) var<storage, read> v_cache: array<KvOct>;
// Per (out row, split): acc as HEAD_DIM / 4 vec4s, and (m, l).
@group(0) @binding(4) var<storage, read_write> part_acc: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> part_ml: array<vec2<f32>>;

const CHUNK: u32 = WG_SIZE;
const Q4: u32 = HEAD_DIM / 4u;
const OCTS: u32 = HEAD_DIM / 8u;
// Floats per padded row of weights.
const PSTRIDE: u32 = CHUNK + 1u;

var<workgroup> q_tile: array<vec4<f32>, ROWS * Q4>; // [row][dim], pre-scaled
var<workgroup> p_tile: array<f32, ROWS * PSTRIDE>; // [row][position]
// Row maxima as order-preserving keys (see max_key).
var<workgroup> max_keys: array<atomic<u32>, ROWS>;

// A u32 whose unsigned order is the float order of x (not NaN): flip the sign bit of a
// positive value, every bit of a negative one.
fn max_key(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    return select(b | 0x80000000u, ~b, (b >> 31u) == 1u);
}

fn key_value(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7fffffffu, (k >> 31u) == 1u));
}

@compute @workgroup_size(WG_SIZE)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let split = wg.x;
    let g = wg.y % params.n_kv_heads;
    let r0 = (wg.y / params.n_kv_heads) * ROWS;
    // Positions the batch wrote: 0 .. pos0 + n_tokens.
    let last_key = params.pos0 + params.n_tokens - 1u;
    let kv_octs = params.n_kv_heads * OCTS;
    let first = split * params.chunks_per_split * CHUNK;

    for (var i = li; i < ROWS * Q4; i += WG_SIZE) {
        let r = r0 + i / Q4;
        var v = vec4<f32>(0.0);
        if r < params.n_rows {
            v = q[out_row(g, r) * Q4 + i % Q4] * params.scale;
        }
        q_tile[i] = v;
    }
    // Thread (oct, row group) keeps acc and l of rows rg + ROW_GROUPS * i, dims 8 * oct .. + 8;
    // every thread keeps the running maximum of every row (the same everywhere).
    let oct = li % OCTS;
    let rg = li / OCTS;
    var acc: array<vec4<f32>, 2u * ROWS_PER_THREAD>;
    var l: array<f32, ROWS_PER_THREAD>;
    for (var i = 0u; i < ROWS_PER_THREAD; i++) {
        acc[2u * i] = vec4<f32>(0.0);
        acc[2u * i + 1u] = vec4<f32>(0.0);
        l[i] = 0.0;
    }
    var running: array<f32, ROWS>;
    for (var r = 0u; r < ROWS; r++) {
        running[r] = MASKED;
    }

    for (var c = 0u; c < params.chunks_per_split && first + c * CHUNK <= last_key; c++) {
        let j0 = first + c * CHUNK;
        // This thread's value octs of the chunk, in flight with the keys.
        var values: array<KvOct, CHUNK>;
        if rg < ROW_GROUPS {
            for (var j = 0u; j < CHUNK; j++) {
                values[j] = v_cache[min(j0 + j, last_key) * kv_octs + g * OCTS + oct];
            }
        }
        if li < ROWS {
            atomicStore(&max_keys[li], 0u);
        }
        workgroupBarrier();

        // Scores of position j0 + li.
        let key_at = min(j0 + li, last_key) * kv_octs + g * OCTS;
        var s: array<f32, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            s[r] = 0.0;
        }
        for (var o = 0u; o < OCTS; o++) {
            let k = kv_oct(k_cache[key_at + o]);
            for (var r = 0u; r < ROWS; r++) {
                s[r] += dot(q_tile[r * Q4 + 2u * o], k[0])
                    + dot(q_tile[r * Q4 + 2u * o + 1u], k[1]);
            }
        }
        for (var r = 0u; r < ROWS; r++) {
            s[r] = select(MASKED, s[r], j0 + li < row_keys(r0 + r));
            let v = sub_max(s[r]);
            if sub_leader(li) {
                atomicMax(&max_keys[r], max_key(v));
            }
        }
        workgroupBarrier();
        // The new running maxima, and the factor on what the earlier chunks summed.
        var rescale: array<f32, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            let m = max(running[r], key_value(atomicLoad(&max_keys[r])));
            rescale[r] = exp2(running[r] - m);
            running[r] = m;
            p_tile[r * PSTRIDE + li] = select(exp2(s[r] - m), 0.0, s[r] == MASKED);
        }
        workgroupBarrier();

        if rg < ROW_GROUPS {
            for (var i = 0u; i < ROWS_PER_THREAD; i++) {
                let r = min(rg + i * ROW_GROUPS, ROWS - 1u);
                acc[2u * i] *= rescale[r];
                acc[2u * i + 1u] *= rescale[r];
                l[i] *= rescale[r];
            }
            for (var j = 0u; j < CHUNK; j++) {
                let v = kv_oct(values[j]);
                for (var i = 0u; i < ROWS_PER_THREAD; i++) {
                    let p = p_tile[min(rg + i * ROW_GROUPS, ROWS - 1u) * PSTRIDE + j];
                    acc[2u * i] = fma(vec4<f32>(p), v[0], acc[2u * i]);
                    acc[2u * i + 1u] = fma(vec4<f32>(p), v[1], acc[2u * i + 1u]);
                    l[i] += p;
                }
            }
        }
        // The next chunk rewrites max_keys and p_tile.
        workgroupBarrier();
    }

    if rg >= ROW_GROUPS {
        return;
    }
    for (var i = 0u; i < ROWS_PER_THREAD; i++) {
        let r = rg + i * ROW_GROUPS;
        if r < ROWS && r0 + r < params.n_rows {
            let at = out_row(g, r0 + r) * params.n_splits + split;
            part_acc[at * Q4 + 2u * oct] = acc[2u * i];
            part_acc[at * Q4 + 2u * oct + 1u] = acc[2u * i + 1u];
            if oct == 0u {
                part_ml[at] = vec2<f32>(running[r], l[i]);
            }
        }
    }
}
