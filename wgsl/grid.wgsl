// Element-wise kernels over more than 65535 workgroups: the host folds the 1-D grid into
// (min(n, 65535), ceil(n / 65535)) workgroups.
// Expects: WG_SIZE.
// Defines: linear_index.

fn linear_index(wg: vec3<u32>, n_wg: vec3<u32>, li: u32) -> u32 {
    return (wg.y * n_wg.x + wg.x) * WG_SIZE + li;
}
