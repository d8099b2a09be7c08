// The rotary embedding of a staged query or key head (attn_input): value i of the head staged
// from `base` (staged(at), defined by the kernel) is RMS-normed by `scale` and weighted by
// norm_weight(kind, i) (attn_input/norm.wgsl or attn_input/plain.wgsl), then rotated by the
// angles of position `pos` of `angles`, entry k the (cos, sin) of position * freq_k (computed
// on the host in f64, as the CPU reference does): pairs (k, k + n_half) in the NeoX layout,
// (2k, 2k + 1) in the normal one; values past 2 * n_half pass through.
//
// Expects: params with n_half and neox; binding `angles` (array<vec2<f32>>); staged(at) -> f32;
//   norm_weight(kind, i).
// Defines: QUERY, KEY, normed(kind, base, i, scale), rotated(kind, base, pos, i, scale).

const QUERY: u32 = 0u;
const KEY: u32 = 1u;

// Value i of the staged head at `base`, normed.
fn normed(kind: u32, base: u32, i: u32, scale: f32) -> f32 {
    return staged(base + i) * scale * norm_weight(kind, i);
}

// Output i of the query or key head at `base`, at position `pos`: normed, then rotated.
fn rotated(kind: u32, base: u32, pos: u32, i: u32, scale: f32) -> f32 {
    let x = normed(kind, base, i, scale);
    let n_half = params.n_half;
    if i >= 2u * n_half {
        return x;
    }
    if params.neox != 0u {
        let cs = angles[pos * n_half + i % n_half];
        if i < n_half {
            return x * cs.x - normed(kind, base, i + n_half, scale) * cs.y;
        }
        return normed(kind, base, i - n_half, scale) * cs.y + x * cs.x;
    }
    let cs = angles[pos * n_half + i / 2u];
    if i % 2u == 0u {
        return x * cs.x - normed(kind, base, i + 1u, scale) * cs.y;
    }
    return normed(kind, base, i - 1u, scale) * cs.y + x * cs.x;
}
