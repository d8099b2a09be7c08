// The folded 1-D grid of the kernels dispatched over items: past 65535 workgroups the host
// folds n workgroups into (min(n, 65535), ceil(n / 65535)), so an entry point takes the
// workgroup's place as a GridGroup and returns on items past its count. GridGroup holds only
// per-workgroup built-ins, so what is computed from it stays workgroup-uniform.
// Expects: WG_SIZE.
// Defines: GridGroup, linear_group(grid) (the workgroup's index), linear_index(grid, li) (the
//   thread's index, WG_SIZE per workgroup).

struct GridGroup {
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) n_wg: vec3<u32>,
}

fn linear_group(grid: GridGroup) -> u32 {
    return grid.wg.y * grid.n_wg.x + grid.wg.x;
}

fn linear_index(grid: GridGroup, li: u32) -> u32 {
    return linear_group(grid) * WG_SIZE + li;
}
