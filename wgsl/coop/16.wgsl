// 16x16 cooperative matrices: f16 inputs, f32 accumulators (NVIDIA/AMD/Intel Vulkan).
// Defines: CoopA, CoopB, CoopC; TileElem, TILE_PACK, tile_elems8: the workgroup tiles the
// matrices are loaded from hold vec2<f16> (one 32-bit store per two values; SPIR-V
// cooperative loads read a vector array as its components, the stride counted in vectors).

alias CoopA = coop_mat16x16<f16, A>;
alias CoopB = coop_mat16x16<f16, B>;
alias CoopC = coop_mat16x16<f32, C>;

alias TileElem = vec2<f16>;
// Values per tile element.
const TILE_PACK: u32 = 2u;

// 8 values as 8 / TILE_PACK tile elements.
fn tile_elems8(v: array<f32, 8>) -> array<TileElem, 4> {
    return array<TileElem, 4>(
        vec2<f16>(vec2<f32>(v[0], v[1])),
        vec2<f16>(vec2<f32>(v[2], v[3])),
        vec2<f16>(vec2<f32>(v[4], v[5])),
        vec2<f16>(vec2<f32>(v[6], v[7])),
    );
}
