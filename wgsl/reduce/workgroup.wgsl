// Workgroup reductions without subgroup operations: every invocation contributes its own value
// (to a workgroup-memory atomic).
// Defines: sub_max(x), sub_leader(li).

fn sub_max(x: f32) -> f32 {
    return x;
}

fn sub_leader(li: u32) -> bool {
    return true;
}
