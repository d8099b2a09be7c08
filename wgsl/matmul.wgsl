// The parameters and inputs of every grouped matmul and mat-vec (mm_id.wgsl, mm_id_coop.wgsl,
// mv_id.wgsl): y[p] = W[e(p)] @ act[p / act_row_div] over the rows of the experts
// expert_base .. expert_base + expert_count (one weight chunk), for n_pairs pairs; n_used,
// clamp and limit serve the mat-vec epilogues (mv/*.wgsl). Outputs y_at places: activation row
// p / act_row_div owns out_stride values of y, its pairs' rows side by side from out_col (a
// plain (pairs, n_rows) output, or one weight's columns of several stacked by rows).
// Expects: ActChunk (act/<type>.wgsl), MatmulParams (declared by the generator from
//   codegen/src/params.rs).
// Defines: bindings 0 (params), 1 (weights, read by dequant/<type>.wgsl), 2 (act); y_at. Each
//   template declares the rest, from binding 3.

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> weights: array<u32>;
@group(0) @binding(2) var<storage, read> act: array<ActChunk>;

// Where output `row` of pair p goes in y.
fn y_at(p: u32, row: u32) -> u32 {
    return (p / params.act_row_div) * params.out_stride + params.out_col
        + (p % params.act_row_div) * params.n_rows + row;
}
