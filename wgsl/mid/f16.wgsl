// `mid` stored as IEEE halves, two per u32 (no SHADER_F16 needed).
// Defines: MidPair (element of `mid`), mid_pair(v): two values as one element.

alias MidPair = u32;

fn mid_pair(v: vec2<f32>) -> MidPair {
    return pack2x16float(v);
}
