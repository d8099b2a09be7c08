// F16 weights, read as blocks of 32 values (16 words).
// Expects: QK (32), BLOCK_WORDS (16), `weights: array<u32>`.
// Defines: WRaw, wload(block, group), wdecode(raw, group), dequant8(block, group): values
//   8 * group .. 8 * group + 8 of GPU block `block` (see q8_0.wgsl for the contract).

alias WRaw = vec4<u32>;

fn wload(block: u32, group: u32) -> WRaw {
    let w = block * BLOCK_WORDS + 4u * group;
    return vec4<u32>(weights[w], weights[w + 1u], weights[w + 2u], weights[w + 3u]);
}

fn wdecode(r: WRaw, group: u32) -> array<f32, 8> {
    let a = unpack2x16float(r.x);
    let b = unpack2x16float(r.y);
    let c = unpack2x16float(r.z);
    let d = unpack2x16float(r.w);
    return array<f32, 8>(a.x, a.y, b.x, b.y, c.x, c.y, d.x, d.y);
}

fn dequant8(block: u32, group: u32) -> array<f32, 8> {
    return wdecode(wload(block, group), group);
}
