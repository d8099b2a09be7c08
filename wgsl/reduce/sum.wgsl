// The sum over a workgroup of one value per thread, as a tree in workgroup memory in a fixed
// order, so the result does not depend on the subgroup size (or on having subgroups).
// Expects: `partial: array<f32, WG_SIZE>` in workgroup memory, WG_SIZE a power of two.
// Defines: workgroup_sum.

const_assert 0u == (WG_SIZE & (WG_SIZE - 1u));

// Every thread of the workgroup calls it, in uniform control flow (it holds barriers), with its
// value; each gets the total. `partial` is free again when it returns.
fn workgroup_sum(li: u32, v: f32) -> f32 {
    partial[li] = v;
    workgroupBarrier();
    for (var s = WG_SIZE / 2u; s > 0u; s >>= 1u) {
        if li < s {
            partial[li] += partial[li + s];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
