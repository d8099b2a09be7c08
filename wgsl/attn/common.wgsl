// What every attention kernel shares: the parameters and the query-row numbering.
//
// Grouped-query attention, causal over a KV cache that already holds the batch's own keys and
// values (kv_store runs first):
//   out[t][h] = sum_j softmax_j(scale * q[t][h] . K[j][g]) V[j][g],  j = 0 ..= pos0 + t,
// with g = h / group the query head's key/value head. The kernels work per key/value head g on
// its n_rows = T * group query rows, numbered token-major: row r is token r / group, query head
// g * group + r % group. So the rows of one workgroup are all the query heads that share g for
// a few consecutive tokens, and every key and value they load serves all of them.
//
// Scores are kept in base 2: the host passes scale * log2(e), so softmax weights are
// exp2(s - max) and partial maxima (attn_decode -> attn_combine) are in the same units.
//
// With params.window > 0 (a sliding window) a row sees only the window's last keys: j from
// row_first_key(r). Per-head sinks (attn/sinks.wgsl) join the softmax's denominator as a score
// with no value, added once per row where the row's output is normalized.
//
// A workgroup's rows belong to one sequence, `Seq`: the whole batch (one_seq()), or one token of
// a batch of several sequences (attn_decode with attn/seq_table.wgsl), whose rows are numbered
// from 0 within that token and whose keys start at row cache_row0 of the bound cache.
//
// Expects: AttnParams (declared by the generator from codegen/src/params.rs), bound as params.
// Defines: MASKED, Seq, one_seq(), row_keys(s, r), row_first_key(s, r), row_sees(s, r, j),
//   out_row(s, g, r).

// The score of a masked (future or padding) position; never enters a sum.
const MASKED: f32 = -3.0e38;

struct Seq {
    // Position of the sequence's first token here, and its tokens here.
    pos0: u32,
    n_tokens: u32,
    // Its query rows per key/value head (n_tokens * group).
    n_rows: u32,
    // The cache row of its position 0.
    cache_row0: u32,
    // Its first token's index in the batch (q, the partials and out).
    token0: u32,
}

// The batch as one sequence at positions pos0 .. pos0 + n_tokens of the bound cache.
fn one_seq() -> Seq {
    return Seq(params.pos0, params.n_tokens, params.n_rows, 0u, 0u);
}

// Keys row r attends to (positions 0 .. row_keys(s, r)), 0 for rows past n_rows.
fn row_keys(s: Seq, r: u32) -> u32 {
    return select(0u, s.pos0 + r / params.group + 1u, r < s.n_rows);
}

// The first key row r < n_rows attends to: 0, or the window's first position.
fn row_first_key(s: Seq, r: u32) -> u32 {
    let seen = s.pos0 + r / params.group + 1u;
    return select(0u, seen - params.window, params.window != 0u && seen > params.window);
}

// Whether row r sees key j.
fn row_sees(s: Seq, r: u32, j: u32) -> bool {
    return j < row_keys(s, r) && j >= row_first_key(s, r);
}

// The row of q and of the partials (token t, query head h: t * n_heads + h) of row r < n_rows
// of head g. The batch's tokens start at token out_row0 of `out`, so out's row is this plus
// out_row0 * n_heads.
fn out_row(s: Seq, g: u32, r: u32) -> u32 {
    return (s.token0 + r / params.group) * params.n_heads + g * params.group + r % params.group;
}
