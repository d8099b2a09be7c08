// The parameters and inputs of every grouped matmul and mat-vec (mm_id.wgsl, mm_id_coop.wgsl,
// mv_id.wgsl): y[p] = W[e(p)] @ act[p / act_row_div] over the rows of the experts
// expert_base .. expert_base + expert_count (one weight chunk), for n_pairs pairs; n_used,
// clamp and limit serve the mat-vec epilogues (mv/*.wgsl).
// Expects: ActChunk (act/<type>.wgsl), MatmulParams (declared by the generator from
//   codegen/src/params.rs).
// Defines: bindings 0 (params), 1 (weights, read by dequant/<type>.wgsl), 2 (act). Each
//   template declares the rest, from binding 3.

@group(0) @binding(0) var<uniform> params: MatmulParams;
@group(0) @binding(1) var<storage, read> weights: array<u32>;
@group(0) @binding(2) var<storage, read> act: array<ActChunk>;
