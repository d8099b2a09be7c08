// Where value head h's inputs sit in a Gated DeltaNet layer's rows: the convolved row
// x = [q | k | v] (`channels` wide) and the projection row [qkv | z | beta | alpha].
// Expects: `params: DeltaParams`, HEAD_DIM.
// Defines: HeadLayout, head_layout, token_row.

struct HeadLayout {
    // Width of x, and where z starts in a projection row.
    channels: u32,
    // Width of the values, of z and of the output.
    values: u32,
    // Offsets in x of the head's query and key (key head h % n_k_heads) and of its value.
    q: u32,
    k: u32,
    v: u32,
}

fn head_layout(h: u32) -> HeadLayout {
    let key_width = params.n_k_heads * HEAD_DIM;
    let values = params.n_v_heads * HEAD_DIM;
    let q = (h % params.n_k_heads) * HEAD_DIM;
    return HeadLayout(2u * key_width + values, values, q, key_width + q, 2u * key_width + h * HEAD_DIM);
}

// The row of x, of the projection and of the output holding token t of the batch (a batch of
// sequences runs one row at a time, each with its own state).
fn token_row(t: u32) -> u32 {
    return params.row0 + t;
}
