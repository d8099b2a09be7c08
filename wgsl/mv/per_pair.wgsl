// mv_id groups of one pair each (the rows and glu epilogues): workgroup row g is pair g.
// Expects: `params` (matmul.wgsl).
// Defines: mv_groups, mv_pairs, mv_pair.

fn mv_groups() -> u32 {
    return params.n_pairs;
}

fn mv_pairs() -> u32 {
    return 1u;
}

fn mv_pair(group: u32, s: u32) -> u32 {
    return group;
}
