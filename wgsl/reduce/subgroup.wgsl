// Workgroup reductions that combine within each subgroup first (needs SUBGROUP; any subgroup
// size): a value is reduced over its subgroup and one lane per subgroup contributes it.
// Defines: sub_max(x), sub_leader(li).

fn sub_max(x: f32) -> f32 {
    return subgroupMax(x);
}

// Whether the invocation with local index li contributes its subgroup's value.
fn sub_leader(li: u32) -> bool {
    return subgroupBroadcastFirst(li) == li;
}
