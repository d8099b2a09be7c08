// Activations stored as f32.
// Expects: `act: array<ActChunk>` (declared by the template).
// Defines: ActChunk, act8(i): values 8i .. 8i + 8 of the flat activation buffer.

alias ActChunk = vec4<f32>;

fn act8(i: u32) -> array<f32, 8> {
    let a = act[2u * i];
    let b = act[2u * i + 1u];
    return array<f32, 8>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);
}
