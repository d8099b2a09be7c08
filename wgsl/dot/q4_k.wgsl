// Q4_K against int8 activations: one call takes the 32 quant bytes shared by sub-blocks 2s
// (low nibbles) and 2s + 1 (high nibbles), 64 values, decoding their scales once:
//   sum = d * (sc_a * xd_a * (q_a . xq_a) + sc_b * xd_b * (q_b . xq_b))
//         - dmin * (min_a * sum(x_a) + min_b * sum(x_b)).
// Nibbles 0..15 are valid signed bytes, so a masked word is 4 int8 values.
// Expects: QK (256), BLOCK_WORDS (36), `weights: array<u32>`, scale_min_k4
//   (dequant/scale_min_k4.wgsl), xq / xd / xs32 (mv/x_int8.wgsl).
// Defines: QSTEP, wdot (the contract is in dot/q8_0.wgsl).

const QSTEP: u32 = 64u;

fn wdot(block: u32, step: u32, xb: u32) -> f32 {
    let w = block * BLOCK_WORDS;
    let dm = unpack2x16float(weights[w]);
    let packed = vec3<u32>(weights[w + 1u], weights[w + 2u], weights[w + 3u]);
    let a = vec2<f32>(scale_min_k4(packed, 2u * step));
    let b = vec2<f32>(scale_min_k4(packed, 2u * step + 1u));
    let q0 = w + 4u + 8u * step;
    let x0 = xb + QSTEP * step;
    var dot_a = 0;
    var dot_b = 0;
    for (var i = 0u; i < 8u; i++) {
        let q = weights[q0 + i];
        dot_a += dot4I8Packed(q & 0x0F0F0F0Fu, xq(x0 / 4u + i));
        dot_b += dot4I8Packed((q >> 4u) & 0x0F0F0F0Fu, xq(x0 / 4u + 8u + i));
    }
    let ba = x0 / 32u;
    let mins = a.y * xs32(ba) + b.y * xs32(ba + 1u);
    return dm.x * (a.x * xd(ba) * f32(dot_a) + b.x * xd(ba + 1u) * f32(dot_b)) - dm.y * mins;
}
