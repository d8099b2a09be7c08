// The post step of an mHC hyper-connection (deepseek4): the sub-block output `out (T, D)`
// written back into the streams with the mixing values of hc_pre. For token t and column e,
// with x[s] the old value of stream s there:
//   streams[t][dst * D + e] = post[dst] * out[t][e] + sum_src comb[src][dst] * x[src]
// One thread per (token, column): it reads that column of every stream before writing any,
// so the update is in place.
//
// No loops but constant ones; n_cols is host-checked non-zero (the host may run this module
// without naga's loop guards, clamps and division checks).
//
// Consts: WG_SIZE, HC, HC_MIXES.
// Fragments: grid.wgsl (GridGroup, linear_index).
// Params: HyperParams, declared by the generator from codegen/src/params.rs.

// A stream column and a comb row are vec4s.
const_assert HC == 4u;
const_assert HC_MIXES == (2u + HC) * HC;

@group(0) @binding(0) var<uniform> params: HyperParams;
@group(0) @binding(1) var<storage, read> out: array<f32>;
@group(0) @binding(2) var<storage, read> mix: array<f32>;
@group(0) @binding(3) var<storage, read_write> streams: array<f32>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let i = linear_index(grid, li);
    let d = params.n_cols;
    if i >= params.n_tokens * d {
        return;
    }
    let t = i / d;
    let column = t * HC * d + (i - t * d);
    let m = t * HC_MIXES;
    var old: vec4<f32>;
    for (var s = 0u; s < HC; s++) {
        old[s] = streams[column + s * d];
    }
    var mixed = vec4<f32>(0.0);
    for (var src = 0u; src < HC; src++) {
        let c = m + 2u * HC + HC * src;
        let row = vec4<f32>(mix[c], mix[c + 1u], mix[c + 2u], mix[c + 3u]);
        mixed = fma(vec4<f32>(old[src]), row, mixed);
    }
    let f = out[i];
    for (var dst = 0u; dst < HC; dst++) {
        streams[column + dst * d] = fma(mix[m + HC + dst], f, mixed[dst]);
    }
}
