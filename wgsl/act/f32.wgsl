// Activations stored as f32.
// Expects: `act: array<ActChunk>` (declared by the template).
// Defines: ActChunk; ActRaw, act_load(i), act_values(raw): values 8i .. 8i + 8 of the flat
//   activation buffer, loaded and converted in two steps (kernels issue the load a step ahead);
//   act8(i) = act_values(act_load(i)).

alias ActChunk = vec4<f32>;
alias ActRaw = mat2x4<f32>;

fn act_load(i: u32) -> ActRaw {
    return ActRaw(act[2u * i], act[2u * i + 1u]);
}

fn act_values(r: ActRaw) -> array<f32, 8> {
    return array<f32, 8>(r[0].x, r[0].y, r[0].z, r[0].w, r[1].x, r[1].y, r[1].z, r[1].w);
}

fn act8(i: u32) -> array<f32, 8> {
    return act_values(act_load(i));
}
