// The gated RMS norm of a Gated DeltaNet head's output, written out: thread j of value head h
// holds o[j] of token t (in row r = token_row(t));
//   out[r][h][j] = o[j] / sqrt(mean(o^2) + eps) * norm[j] * silu(z[r][h][j])
// with z from the projection row [qkv | z | beta | alpha].
// Expects: `params: DeltaParams`, `proj`, `norm`, `out`, HEAD_DIM, workgroup_sum (one head per
// workgroup), head_layout, token_row. Every thread calls it, in uniform control flow (it holds
// barriers).
// Defines: write_gated.

fn write_gated(j: u32, h: u32, t: u32, o: f32) {
    let at = head_layout(h);
    let r = token_row(t);
    let z = proj[r * params.proj_cols + at.channels + h * HEAD_DIM + j];
    let rms = 1.0 / sqrt(workgroup_sum(j, o * o) / f32(HEAD_DIM) + params.eps);
    out[r * at.values + h * HEAD_DIM + j] = o * rms * norm[j] * (z / (1.0 + exp(-z)));
}
