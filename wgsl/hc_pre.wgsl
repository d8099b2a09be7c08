// The pre step of an mHC hyper-connection (deepseek4), one workgroup per token. `mixes` holds
// the token's raw mixes `fn . x` (HC_MIXES values, a matmul over its HC streams of n_cols,
// unnormed). The RMS norm before `fn` has no weight, so it is one factor of the whole row,
// applied here:
//   a_i  = mixes_i / sqrt(mean(x^2) + rms_eps) * scale[family(i)] + base_i
//          (families: pre i < HC, post i < 2 HC, comb the rest)
//   pre  = sigmoid(a) + eps,   post = 2 sigmoid(a)
//   comb = a row softmax of a (over dst, per src) plus eps, then Sinkhorn: a column pass,
//          then sinkhorn_iterations - 1 times a row pass and a column pass, each sum plus eps
// into mix (pre, post, then comb row by row), and the sub-block input sum_s pre[s] * x[s].
// One thread computes the coefficients (a few hundred flops, in registers) while the others
// wait at a barrier; the workgroup that summed the row's squares then reads the row again
// for the input, so neither the RMS nor the pre weights go through memory between kernels.
//
// Every loop has a bound uniform over the workgroup or a constant one, and every
// workgroup-array index is in range by construction (the host may run this module without
// naga's loop guards and clamps).
//
// Consts: WG_SIZE, HC, HC_MIXES.
// Fragments: grid.wgsl (GridGroup, linear_group), reduce/sum.wgsl (workgroup_sum).
// Params: HyperParams, declared by the generator from codegen/src/params.rs.

// A stream's weights and a comb row are vec4s.
const_assert HC == 4u;
const_assert HC_MIXES == (2u + HC) * HC;

@group(0) @binding(0) var<uniform> params: HyperParams;
@group(0) @binding(1) var<storage, read> streams: array<f32>;
@group(0) @binding(2) var<storage, read> mixes: array<f32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> base: array<f32>;
@group(0) @binding(5) var<storage, read_write> input: array<f32>;
@group(0) @binding(6) var<storage, read_write> mix: array<f32>;

var<workgroup> partial: array<f32, WG_SIZE>;
var<workgroup> pre_weights: vec4<f32>;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Divides every column of c by its sum plus eps.
fn normalize_cols(c: array<vec4<f32>, HC>) -> array<vec4<f32>, HC> {
    let sums = c[0] + c[1] + c[2] + c[3] + vec4<f32>(params.eps);
    return array<vec4<f32>, HC>(c[0] / sums, c[1] / sums, c[2] / sums, c[3] / sums);
}

// Token t's mixing values, written to mix; returns its pre weights.
fn coefficients(t: u32, inv_rms: f32) -> vec4<f32> {
    let m = t * HC_MIXES;
    var pre: vec4<f32>;
    var post: vec4<f32>;
    var comb: array<vec4<f32>, HC>;
    for (var s = 0u; s < HC; s++) {
        pre[s] = sigmoid(mixes[m + s] * inv_rms * scale[0] + base[s]) + params.eps;
        post[s] = 2.0 * sigmoid(mixes[m + HC + s] * inv_rms * scale[1] + base[HC + s]);
        for (var d = 0u; d < HC; d++) {
            let i = 2u * HC + HC * s + d;
            comb[s][d] = mixes[m + i] * inv_rms * scale[2] + base[i];
        }
    }
    for (var s = 0u; s < HC; s++) {
        let r = comb[s];
        let e = exp(r - vec4<f32>(max(max(r.x, r.y), max(r.z, r.w))));
        comb[s] = e / (e.x + e.y + e.z + e.w) + vec4<f32>(params.eps);
    }
    comb = normalize_cols(comb);
    for (var i = 1u; i < params.sinkhorn_iterations; i++) {
        for (var s = 0u; s < HC; s++) {
            let r = comb[s];
            comb[s] = r / (r.x + r.y + r.z + r.w + params.eps);
        }
        comb = normalize_cols(comb);
    }
    for (var s = 0u; s < HC; s++) {
        mix[m + s] = pre[s];
        mix[m + HC + s] = post[s];
        for (var d = 0u; d < HC; d++) {
            mix[m + 2u * HC + HC * s + d] = comb[s][d];
        }
    }
    return pre;
}

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let t = linear_group(grid);
    if t >= params.n_tokens {
        return;
    }
    let d = params.n_cols;
    let row = t * HC * d;
    var sum = 0.0;
    for (var i = li; i < HC * d; i += WG_SIZE) {
        let v = streams[row + i];
        sum = fma(v, v, sum);
    }
    let total = workgroup_sum(li, sum);
    if li == 0u {
        pre_weights = coefficients(t, 1.0 / sqrt(total / f32(HC * d) + params.rms_eps));
    }
    workgroupBarrier();
    let w = pre_weights;
    for (var e = li; e < d; e += WG_SIZE) {
        var acc = 0.0;
        for (var s = 0u; s < HC; s++) {
            acc = fma(w[s], streams[row + s * d + e], acc);
        }
        input[t * d + e] = acc;
    }
}
