// Q6_K against int8 activations. One call takes a quarter of a block: half n = step / 2 and
// the 16 positions l of part h = step % 2, across the four 32-value quarters k of that half,
// i.e. values 128n + 32k + 16h + (0..16): 4 words of low nibbles from each of two 32-byte
// rows, 4 words of high bit pairs, and the 4 int8 scales of those 16-value sub-blocks:
//   sum_k d * sc_k * (xd * (q_k . xq_k) - 32 * sum(x_k))   (value = d * sc * (q - 32)).
// A 6-bit quant (0..63) is a valid signed byte.
// Expects: QK (256), BLOCK_WORDS (53), `weights: array<u32>`, xq (mv/x_int8.wgsl),
//   dot/quarter.wgsl.
// Defines: QSTEP, wdot (the contract is in dot/q8_0.wgsl).

const QSTEP: u32 = 64u;

fn wdot(block: u32, step: u32, xb: u32) -> f32 {
    let w = block * BLOCK_WORDS;
    let n = step / 2u;
    let h = step % 2u;
    // low nibbles of bytes 64n + 16h + l (k = 0, 2) and 64n + 32 + 16h + l (k = 1, 3)
    let ql = w + 16u * n + 4u * h;
    // bit pairs 2k of bytes 128 + 32n + 16h + l
    let qh = w + 32u + 8u * n + 4u * h;
    var dots = vec4<i32>(0);
    for (var i = 0u; i < 4u; i++) {
        let lo = weights[ql + i];
        let hi = weights[ql + 8u + i];
        let bits = weights[qh + i];
        let q = vec4<u32>(
            (lo & 0x0F0F0F0Fu) | ((bits << 4u) & 0x30303030u),
            (hi & 0x0F0F0F0Fu) | ((bits << 2u) & 0x30303030u),
            ((lo >> 4u) & 0x0F0F0F0Fu) | (bits & 0x30303030u),
            ((hi >> 4u) & 0x0F0F0F0Fu) | ((bits >> 2u) & 0x30303030u),
        );
        let x = (xb + 128u * n + 16u * h) / 4u + i;
        dots += vec4<i32>(
            dot4I8Packed(q.x, xq(x)),
            dot4I8Packed(q.y, xq(x + 8u)),
            dot4I8Packed(q.z, xq(x + 16u)),
            dot4I8Packed(q.w, xq(x + 24u)),
        );
    }
    // scale bytes 192 + 8n + 2k + h: k = 0, 1 in word 48 + 2n, k = 2, 3 in the next
    // the scales are int8: sign-extend the bytes
    let bytes = quarter_scales(weights[w + 48u + 2u * n], weights[w + 49u + 2u * n], h);
    let sc = vec4<f32>(vec4<i32>(bytes << vec4<u32>(24u)) >> vec4<u32>(24u));
    let b = (xb + 128u * n) / 32u;
    let d = unpack2x16float(weights[w + 52u]).x;
    return d * dot(sc, quarter_xd(b) * vec4<f32>(dots) - 32.0 * quarter_sums(b, h));
}

