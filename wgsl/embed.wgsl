// Rows of a weight table, dequantized: out[t][c] = table[ids[t]][c] for the n_rows rows of
// n_cols values (whole blocks) from table row row_base on, 8 values per invocation. A table too
// large for one binding is bound slice by slice: an id outside the bound rows is another
// dispatch's to write (the host refuses ids past the whole table).
//
// Consts: WG_SIZE, QK, BLOCK_WORDS.
// Fragments: grid.wgsl (GridGroup, linear_index), dequant/<type>.wgsl (dequant8 over `weights`).
// Params: EmbedParams, declared by the generator from codegen/src/params.rs.

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
    let row = ids[i / groups] - params.row_base;
    if row >= params.n_rows {
        return;
    }
    let col = 8u * (i % groups);
    let v = dequant8(row * (params.n_cols / QK) + col / QK, (col % QK) / 8u);
    for (var j = 0u; j < 8u; j++) {
        out[8u * i + j] = v[j];
    }
}
