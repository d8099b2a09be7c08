// Activations stored as IEEE halves, two per u32 (no SHADER_F16 needed).
// Expects: `act: array<ActChunk>` (declared by the template).
// Defines: ActChunk, act8(i): values 8i .. 8i + 8 of the flat activation buffer.

alias ActChunk = vec4<u32>;

fn act8(i: u32) -> array<f32, 8> {
    let w = act[i];
    let a = unpack2x16float(w.x);
    let b = unpack2x16float(w.y);
    let c = unpack2x16float(w.z);
    let d = unpack2x16float(w.w);
    return array<f32, 8>(a.x, a.y, b.x, b.y, c.x, c.y, d.x, d.y);
}
