// The next tokens of several sequences in one dispatch, their caches regions of one buffer (a
// KV arena): token t of the batch is at position seqs[t].y of the region that starts at cache
// row seqs[t].x (params.pos0 plays no part).
// Defines: binding 7 (seqs, per token); SEQ_TABLE, seq_entry(t) (the cache row of the token's
// position 0, its position).

@group(0) @binding(7) var<storage, read> seqs: array<vec2<u32>>;

const SEQ_TABLE: bool = true;

fn seq_entry(t: u32) -> vec2<u32> {
    return seqs[t];
}
