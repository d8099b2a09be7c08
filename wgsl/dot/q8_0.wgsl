// Q8_0 against int8 activations: a block's 32 quants are the 32 bytes of 8 words, so the
// integer dot product needs no decoding at all.
// Expects: QK (32), BLOCK_WORDS (9), `weights: array<u32>`, xq / xd (mv/x_int8.wgsl).
// Defines (the contract of every dot fragment):
//   QSTEP: values one call covers (a divisor of QK, a multiple of 32);
//   wdot(block, step, xb): the dot product of values QSTEP * step .. + QSTEP of GPU block
//     `block` with the staged activations, where xb is the staging index of the block's
//     first value (so value v of the block is activation xb + v).

const QSTEP: u32 = 32u;

fn wdot(block: u32, step: u32, xb: u32) -> f32 {
    let w = block * BLOCK_WORDS;
    var acc = 0;
    for (var i = 0u; i < 8u; i++) {
        acc += dot4I8Packed(weights[w + 1u + i], xq(xb / 4u + i));
    }
    return unpack2x16float(weights[w]).x * xd(xb / 32u) * f32(acc);
}
