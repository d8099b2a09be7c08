// `mid` stored as f32.
// Defines: MidPair (element of `mid`), mid_pair(v): two values as one element.

alias MidPair = vec2<f32>;

fn mid_pair(v: vec2<f32>) -> MidPair {
    return v;
}
