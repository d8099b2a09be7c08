// attn_input with per-head q/k RMS norms (qwen3): a query head is scaled by q_norm, a key head
// by k_norm (one head long each) after its RMS normalisation.
// Defines: bindings 6 (q_norm), 8 (k_norm); NORM, norm_weight(kind, i) (kind 0 query, 1 key).

@group(0) @binding(6) var<storage, read> q_norm: array<f32>;
@group(0) @binding(8) var<storage, read> k_norm: array<f32>;

const NORM: bool = true;

fn norm_weight(kind: u32, i: u32) -> f32 {
    if kind == 0u {
        return q_norm[i];
    }
    return k_norm[i];
}
