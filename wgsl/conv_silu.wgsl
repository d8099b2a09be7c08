// qwen35moe's causal depthwise convolution and SiLU over the q|k|v channels of a Gated
// DeltaNet layer's projection, the convolution's tail carried across calls. One thread per
// channel c walks the batch's tokens:
//   x[t][c] = silu(sum_k conv[c][k] * in(t - (taps - 1) + k))
// where in(i) is channel c of projection row i for i >= 0 and, before the batch, row
// taps - 1 + i of the tail (the last taps - 1 inputs of earlier calls, oldest first). Then the
// tail keeps the last taps - 1 inputs. A channel's tail is read and written by its thread
// only, and row k is written after row n_tokens + k (> k) was read, so the update is in place.
// Token t of the batch is row row0 + t of `proj` and of `x` (a batch of sequences runs one
// row at a time, each with its own tail).
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index).
// Params: ConvParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: ConvParams;
@group(0) @binding(1) var<storage, read> proj: array<f32>;
@group(0) @binding(2) var<storage, read> conv: array<f32>;
@group(0) @binding(3) var<storage, read_write> tail: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

// Channel c's input at token i of the batch (i < 0: from the tail).
fn conv_input(i: i32, c: u32) -> f32 {
    if i < 0 {
        return tail[u32(i32(params.taps) - 1 + i) * params.n_channels + c];
    }
    return proj[(params.row0 + u32(i)) * params.proj_cols + c];
}

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let c = linear_index(grid, li);
    if c >= params.n_channels {
        return;
    }
    let past = i32(params.taps) - 1;
    for (var t = 0u; t < params.n_tokens; t++) {
        var sum = 0.0;
        for (var k = 0u; k < params.taps; k++) {
            sum = fma(conv[c * params.taps + k], conv_input(i32(t) - past + i32(k), c), sum);
        }
        x[(params.row0 + t) * params.n_channels + c] = sum / (1.0 + exp(-sum));
    }
    for (var k = 0; k < past; k++) {
        tail[u32(k) * params.n_channels + c] = conv_input(i32(params.n_tokens) - past + k, c);
    }
}
