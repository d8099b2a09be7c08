// A deepseek4 compressor's pooling, one workgroup per compressed row: per column c of the
// row's `n_cols`, a softmax over the window's scores weighs the window's values,
//   pooled[c] = sum_j e^(s_j - M) kv_j / sum_j e^(s_j - M),   s_j = score_j + ape[j % ratio]
// over the `ratio` tokens of the row's block (through the last n_cols of each projection row
// of coff * n_cols) and, with overlap (coff 2), the block before it (through the first
// n_cols), when there is one; then the row is RMS-normed and times `norm`. Projection rows are
// consecutive tokens from a block start: with `previous` 1 the first block is only a
// previous block (it makes no row), else row 0's block has no previous one (llama.cpp pools
// zeros with score -inf there: weight 0).
//
// Every loop has a bound uniform over the workgroup (params) or a constant one; a thread
// reads back only the columns it wrote.
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_group), reduce/sum.wgsl (workgroup_sum).
// Params: PoolParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: PoolParams;
@group(0) @binding(1) var<storage, read> kv: array<f32>;
@group(0) @binding(2) var<storage, read> score: array<f32>;
@group(0) @binding(3) var<storage, read> ape: array<f32>;
@group(0) @binding(4) var<storage, read> norm: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, WG_SIZE>;

// Score of window entry (token row `t`, place `j` in its block) at projection column `col`.
fn biased(t: u32, j: u32, col: u32) -> f32 {
    let stride = params.coff * params.n_cols;
    return score[t * stride + col] + ape[j * stride + col];
}

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let b = linear_group(grid);
    if b >= params.n_rows {
        return;
    }
    let width = params.n_cols;
    let ratio = params.ratio;
    let stride = params.coff * width;
    let block = b + params.previous;
    let first = block * ratio;
    // The previous block's tokens, 0 without overlap or before the first block.
    var n_prev = 0u;
    if params.coff == 2u && block > 0u {
        n_prev = ratio;
    }
    let prev_first = first - n_prev;
    let cur_off = (params.coff - 1u) * width;
    var sq = 0.0;
    for (var c = li; c < width; c += WG_SIZE) {
        var m = biased(first, 0u, cur_off + c);
        for (var j = 0u; j < ratio; j++) {
            m = max(m, biased(first + j, j, cur_off + c));
        }
        for (var j = 0u; j < n_prev; j++) {
            m = max(m, biased(prev_first + j, j, c));
        }
        var num = 0.0;
        var den = 0.0;
        for (var j = 0u; j < n_prev; j++) {
            let e = exp(biased(prev_first + j, j, c) - m);
            num = fma(e, kv[(prev_first + j) * stride + c], num);
            den += e;
        }
        for (var j = 0u; j < ratio; j++) {
            let e = exp(biased(first + j, j, cur_off + c) - m);
            num = fma(e, kv[(first + j) * stride + cur_off + c], num);
            den += e;
        }
        let v = num / den;
        out[b * width + c] = v;
        sq = fma(v, v, sq);
    }
    let total = workgroup_sum(li, sq);
    let inv_rms = 1.0 / sqrt(total / f32(width) + params.rms_eps);
    for (var c = li; c < width; c += WG_SIZE) {
        out[b * width + c] = out[b * width + c] * inv_rms * norm[c];
    }
}
