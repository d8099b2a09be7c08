// The low precision DeepSeek V4 was trained with, simulated as the original engine does (see
// backends/cpu/src/deepseek4/qat.rs, the reference): in place, per head of `head_dim` values
// of each of `n_rows` rows (a workgroup each),
// - with `hadamard`, the head rotated by the normalised Sylvester Hadamard transform
//   (head_dim a power of two; the butterfly's passes in workgroup memory);
// - its first `n_round` values, in blocks of `block`, each rounded to the format (`format` 0:
//   FP8 E4M3, largest 448, amax floored at 1e-4; 1: FP4 E2M1, largest 6, amax floored at
//   6 * 2^-126) under the block's scale, the smallest power of two with amax <= max * scale:
//   divided, clamped to +-max, rounded to the nearest value of the format (ties to even),
//   multiplied back. A thread per block.
//
// Every loop bound and barrier is uniform over the workgroup (params and the workgroup id).
//
// Consts: WG_SIZE, MAX_HEAD_DIM.
// Fragments: grid.wgsl (GridGroup, linear_group).
// Params: QatParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: QatParams;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;

var<workgroup> v: array<f32, MAX_HEAD_DIM>;

// |a| (at most the format's largest value) to the nearest multiple of the format's step at its
// exponent, ties to even, with x's sign: `mantissa_bits` and the smallest normal exponent
// define the format.
fn round_minifloat(x: f32, largest: f32, mantissa_bits: i32, min_normal_exp: i32) -> f32 {
    let a = min(abs(x), largest);
    var e = min_normal_exp;
    if a > 0.0 {
        e = max(frexp(a).exp - 1, min_normal_exp);
    }
    let step = ldexp(1.0, e - mantissa_bits);
    let r = round(a / step) * step;
    return select(r, -r, x < 0.0);
}

// Block [first, first + len) of v rounded under its own power-of-two scale.
fn round_block(first: u32, len: u32) {
    var largest = 448.0;
    var floor = 1.0e-4;
    var mantissa_bits = 3;
    var min_normal_exp = -6;
    if params.format == 1u {
        largest = 6.0;
        floor = 6.0 * ldexp(1.0, -126);
        mantissa_bits = 1;
        min_normal_exp = 0;
    }
    var amax = floor;
    for (var i = 0u; i < len; i++) {
        amax = max(amax, abs(v[first + i]));
    }
    // log2 may be off next to a power of two: settle the exponent exactly.
    var e = i32(ceil(log2(amax / largest)));
    if ldexp(largest, e) < amax {
        e += 1;
    }
    if ldexp(largest, e - 1) >= amax {
        e -= 1;
    }
    for (var i = 0u; i < len; i++) {
        let q = clamp(ldexp(v[first + i], -e), -largest, largest);
        v[first + i] = ldexp(round_minifloat(q, largest, mantissa_bits, min_normal_exp), e);
    }
}

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let item = linear_group(grid);
    if item >= params.n_heads_total {
        return;
    }
    let n = params.head_dim;
    let at = item * n;
    for (var i = li; i < n; i += WG_SIZE) {
        v[i] = x[at + i];
    }
    workgroupBarrier();
    if params.hadamard == 1u {
        for (var stride = 1u; stride < n; stride *= 2u) {
            for (var p = li; p < n / 2u; p += WG_SIZE) {
                let i = (p / stride) * 2u * stride + p % stride;
                let a = v[i];
                let b = v[i + stride];
                v[i] = a + b;
                v[i + stride] = a - b;
            }
            workgroupBarrier();
        }
        let norm = 1.0 / sqrt(f32(n));
        for (var i = li; i < n; i += WG_SIZE) {
            v[i] *= norm;
        }
        workgroupBarrier();
    }
    let block = params.block;
    let n_blocks = (params.n_round + block - 1u) / block;
    for (var b = li; b < n_blocks; b += WG_SIZE) {
        let first = b * block;
        round_block(first, min(block, params.n_round - first));
    }
    workgroupBarrier();
    for (var i = li; i < n; i += WG_SIZE) {
        x[at + i] = v[i];
    }
}
