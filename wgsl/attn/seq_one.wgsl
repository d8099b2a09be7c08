// One sequence per dispatch: token t of the batch is at position pos0 + t of the bound cache,
// whose row 0 is position 0.
// Defines: SEQ_TABLE, seq_entry(t) (the cache row of the token's position 0, its position).

const SEQ_TABLE: bool = false;

fn seq_entry(t: u32) -> vec2<u32> {
    return vec2<u32>(0u, params.pos0 + t);
}
