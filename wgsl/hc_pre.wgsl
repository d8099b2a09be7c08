// The pre step of an mHC hyper-connection (deepseek4), one workgroup per token: the weighted
// sum of the token's HC streams of n_cols, by weights derived from its raw mixes `fn . x`
// (N_MIXES values per token, a matmul over the streams, unnormed). The RMS norm before `fn`
// has no weight, so it is one factor of the whole row, applied here:
//   a_i  = mixes_i / sqrt(mean(x^2) + rms_eps) * scale[family(i)] + base_i
//   pre  = sigmoid(a) + eps over the first HC mixes
//   input = sum_s pre[s] * x[s]
// The fragment defines token_weights, which returns the pre weights: hc/mix.wgsl for a
// sub-block (it also finishes the post weights and the Sinkhorn-normed comb into `mix`),
// hc/head.wgsl for the output head (its mixes are the pre ones only). One thread computes
// them (a few hundred flops, in registers) while the others wait at a barrier; the workgroup
// that summed the row's squares then reads the row again for the input, so neither the RMS
// nor the weights go through memory between kernels.
//
// Every loop has a bound uniform over the workgroup or a constant one, and every
// workgroup-array index is in range by construction (the host may run this module without
// naga's loop guards and clamps).
//
// Consts: WG_SIZE, HC, N_MIXES.
// Fragments: grid.wgsl (GridGroup, linear_group), reduce/sum.wgsl (workgroup_sum),
//   hc/mix.wgsl or hc/head.wgsl (token_weights).
// Params: HyperParams, declared by the generator from codegen/src/params.rs.

// A token's weights are a vec4.
const_assert HC == 4u;

@group(0) @binding(0) var<uniform> params: HyperParams;
@group(0) @binding(1) var<storage, read> streams: array<f32>;
@group(0) @binding(2) var<storage, read> mixes: array<f32>;
@group(0) @binding(3) var<storage, read> scale: array<f32>;
@group(0) @binding(4) var<storage, read> base: array<f32>;
@group(0) @binding(5) var<storage, read_write> input: array<f32>;

var<workgroup> partial: array<f32, WG_SIZE>;
var<workgroup> pre_weights: vec4<f32>;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// The pre weights from the mixes of token t, the first HC of its N_MIXES.
fn pre_of(t: u32, inv_rms: f32) -> vec4<f32> {
    let m = t * N_MIXES;
    var pre: vec4<f32>;
    for (var s = 0u; s < HC; s++) {
        pre[s] = sigmoid(mixes[m + s] * inv_rms * scale[0] + base[s]) + params.eps;
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
        pre_weights = token_weights(t, 1.0 / sqrt(total / f32(HC * d) + params.rms_eps));
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
