// 8x8 cooperative matrices: f16 inputs, f32 accumulators (Metal simdgroup matrices).
// Defines: CoopA, CoopB, CoopC; TileElem, TILE_PACK, tile_elems8: the workgroup tiles the
// matrices are loaded from hold f16 values (MSL's simdgroup_load takes a pointer of the
// matrix's own element type).

alias CoopA = coop_mat8x8<f16, A>;
alias CoopB = coop_mat8x8<f16, B>;
alias CoopC = coop_mat8x8<f32, C>;

alias TileElem = f16;
// Values per tile element.
const TILE_PACK: u32 = 1u;

// 8 values as 8 / TILE_PACK tile elements.
fn tile_elems8(v: array<f32, 8>) -> array<TileElem, 8> {
    return array<TileElem, 8>(
        f16(v[0]), f16(v[1]), f16(v[2]), f16(v[3]), f16(v[4]), f16(v[5]), f16(v[6]), f16(v[7]),
    );
}
