// The load/decode split for a type whose fragment only defines `dequant8`: the "raw" words are
// the decoded values themselves, so kernels cannot issue this type's loads a step ahead of the
// decode (correct, not tuned). The tuned types (Q8_0, K-quants, IQ2_XXS, F16) define `WRaw`,
// `wload` and `wdecode` themselves; see the contract in dequant/q8_0.wgsl.
// Expects: `dequant8(block, group)` from the type's fragment.
// Defines: WRaw, wload, wdecode.

alias WRaw = array<f32, 8>;

fn wload(block: u32, group: u32) -> WRaw {
    return dequant8(block, group);
}

fn wdecode(r: WRaw, group: u32) -> array<f32, 8> {
    return r;
}
