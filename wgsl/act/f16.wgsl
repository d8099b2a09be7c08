// Activations stored as IEEE halves, two per u32 (no SHADER_F16 needed).
// Expects: `act: array<ActChunk>` (declared by the template).
// Defines: ActChunk; ActRaw, act_load(i), act_values(raw): values 8i .. 8i + 8 of the flat
//   activation buffer, loaded and converted in two steps (kernels issue the load a step ahead);
//   act8(i) = act_values(act_load(i)).

alias ActChunk = vec4<u32>;
alias ActRaw = vec4<u32>;

fn act_load(i: u32) -> ActRaw {
    return act[i];
}

fn act_values(r: ActRaw) -> array<f32, 8> {
    let a = unpack2x16float(r.x);
    let b = unpack2x16float(r.y);
    let c = unpack2x16float(r.z);
    let d = unpack2x16float(r.w);
    return array<f32, 8>(a.x, a.y, b.x, b.y, c.x, c.y, d.x, d.y);
}

fn act8(i: u32) -> array<f32, 8> {
    return act_values(act_load(i));
}
