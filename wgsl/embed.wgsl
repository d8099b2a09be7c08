// Rows of a weight table, dequantized: out[t][c] = table[ids[t]][c] for a table of n_rows rows
// of n_cols values (whole blocks), 8 values per invocation. An id past the table gives zeros
// (the host refuses such ids before dispatch).
//
// Consts: WG_SIZE, QK, BLOCK_WORDS.
// Fragments: grid.wgsl (GridGroup, linear_index), dequant/<type>.wgsl (dequant8 over `weights`).

struct EmbedParams {
    n_tokens: u32,
    n_cols: u32,
    n_rows: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> params: EmbedParams;
@group(0) @binding(1) var<storage, read> weights: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let i = linear_index(grid, li);
    let groups = params.n_cols / 8u;
    if i >= params.n_tokens * groups {
        return;
    }
    let row = ids[i / groups];
    let col = 8u * (i % groups);
    var v: array<f32, 8>;
    if row < params.n_rows {
        v = dequant8(row * (params.n_cols / QK) + col / QK, (col % QK) / 8u);
    }
    for (var j = 0u; j < 8u; j++) {
        out[8u * i + j] = v[j];
    }
}
