// A Gated DeltaNet value head's state column in a thread's registers: column j of head h's
// HEAD_DIM x HEAD_DIM state, stored `[head][key i][value j]`, read before a batch and written
// after it.
// Expects: `state`, HEAD_DIM.
// Defines: load_column, store_column.

fn load_column(h: u32, j: u32) -> array<f32, HEAD_DIM> {
    var s: array<f32, HEAD_DIM>;
    for (var i = 0u; i < HEAD_DIM; i++) {
        s[i] = state[(h * HEAD_DIM + i) * HEAD_DIM + j];
    }
    return s;
}

fn store_column(h: u32, j: u32, s: array<f32, HEAD_DIM>) {
    for (var i = 0u; i < HEAD_DIM; i++) {
        state[(h * HEAD_DIM + i) * HEAD_DIM + j] = s[i];
    }
}
