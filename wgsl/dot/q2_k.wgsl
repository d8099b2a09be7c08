// Q2_K against int8 activations. One call takes a quarter of a block: half n = step / 2 and
// the 16 positions l of part h = step % 2, across the four 32-value quarters j of that half,
// i.e. values 128n + 32j + 16h + (0..16): 4 quant words (bit pairs 2j of bytes 32n + 16h + l)
// and the 4 scale/min bytes of those 16-value sub-blocks:
//   sum = sum_j d * sc_j * xd_j * (q_j . xq_j) - dmin * m_j * sum(x_j)
// (value = d * sc * q - dmin * m).
// Expects: QK (256), BLOCK_WORDS (21), `weights: array<u32>`, xq (mv/x_int8.wgsl),
//   dot/quarter.wgsl.
// Defines: QSTEP, wdot (the contract is in dot/q8_0.wgsl).

const QSTEP: u32 = 64u;

fn wdot(block: u32, step: u32, xb: u32) -> f32 {
    let w = block * BLOCK_WORDS;
    let n = step / 2u;
    let h = step % 2u;
    let q0 = w + 4u + 8u * n + 4u * h;
    var dots = vec4<i32>(0);
    for (var i = 0u; i < 4u; i++) {
        let q = weights[q0 + i];
        let x = (xb + 128u * n + 16u * h) / 4u + i;
        dots += vec4<i32>(
            dot4I8Packed(q & 0x03030303u, xq(x)),
            dot4I8Packed((q >> 2u) & 0x03030303u, xq(x + 8u)),
            dot4I8Packed((q >> 4u) & 0x03030303u, xq(x + 16u)),
            dot4I8Packed((q >> 6u) & 0x03030303u, xq(x + 24u)),
        );
    }
    // scale bytes 8n + 2j + h: j = 0, 1 in word 2n, j = 2, 3 in the next
    let s01 = weights[w + 2u * n];
    let s23 = weights[w + 2u * n + 1u];
    let sc = quarter_scales(s01, s23, h);
    let b = (xb + 128u * n) / 32u;
    let dm = unpack2x16float(weights[w + 20u]);
    return dm.x * dot(vec4<f32>(sc & vec4<u32>(15u)), quarter_xd(b) * vec4<f32>(dots))
        - dm.y * dot(vec4<f32>(sc >> vec4<u32>(4u)), quarter_sums(b, h));
}
