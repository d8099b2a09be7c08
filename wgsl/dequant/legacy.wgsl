// The 4-bit codes of the legacy 32-value formats (Q4_0, Q4_1, Q5_0, Q5_1): 16 quant bytes,
// value j < 16 in the low nibble of byte j, value j + 16 in its high nibble.
// Expects: `weights: array<u32>`.
// Defines: nibbles8.

// The codes of values 8 * group .. 8 * group + 8, from the quant bytes starting at word `qs`.
fn nibbles8(qs: u32, group: u32) -> array<u32, 8> {
    let w = qs + 2u * (group % 2u);
    let q = vec2<u32>(weights[w], weights[w + 1u]);
    let shift = 4u * (group / 2u);
    var out: array<u32, 8>;
    for (var i = 0u; i < 8u; i++) {
        out[i] = extractBits(q[i / 4u], 8u * (i % 4u) + shift, 4u);
    }
    return out;
}
