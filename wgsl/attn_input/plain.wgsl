// attn_input without q/k norms: heads are rotated as they are.
// Defines: NORM, norm_weight(kind, i).

const NORM: bool = false;

fn norm_weight(kind: u32, i: u32) -> f32 {
    return 1.0;
}
