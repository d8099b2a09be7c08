// Q8_0: 32 int8 quants with an f16 scale, value = d * q.
// GPU block (9 words): word 0 = d in the low half (high half is padding), words 1..8 = quants.
// Expects: QK (32), BLOCK_WORDS (9), `weights: array<u32>`.
// Defines (the contract of every dequant fragment):
//   WRaw: the words one 8-value group needs, as loaded;
//   wload(block, group): those words for values 8 * group .. 8 * group + 8 of GPU block
//     `block` (loads only, so kernels can issue them a step ahead and decode later);
//   wdecode(raw, group): the 8 values; an all-zero WRaw decodes to zeros (masked loads);
//   dequant8(block, group) = wdecode(wload(block, group), group).

alias WRaw = vec3<u32>;

fn wload(block: u32, group: u32) -> WRaw {
    let w = block * BLOCK_WORDS;
    return vec3<u32>(weights[w], weights[w + 1u + 2u * group], weights[w + 2u + 2u * group]);
}

fn wdecode(r: WRaw, group: u32) -> array<f32, 8> {
    let d = unpack2x16float(r.x).x;
    let lo = vec4<f32>(unpack4xI8(r.y)) * d;
    let hi = vec4<f32>(unpack4xI8(r.z)) * d;
    return array<f32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
}

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    return wdecode(wload(block, group), group);
}
