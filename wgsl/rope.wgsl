// Rotary position embedding in place. Row t of x holds n_heads heads of head_dim values; the
// first 2 * n_half values of each head rotate by the angles of row t of `angles`, whose entry k
// is (cos, sin) of position(t) * freq_k (computed on the host in f64, as the CPU reference
// does): pairs (k, k + n_half) in the NeoX layout, (2k, 2k + 1) in the normal one. The rest of
// each head passes through. One invocation per rotated pair.
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index).

struct RotaryParams {
    n_rows: u32,
    n_heads: u32,
    head_dim: u32,
    n_half: u32,
    neox: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: RotaryParams;
@group(0) @binding(1) var<storage, read> angles: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let i = linear_index(grid, li);
    let per_row = params.n_heads * params.n_half;
    if i >= params.n_rows * per_row {
        return;
    }
    let t = i / per_row;
    let head = (i % per_row) / params.n_half;
    let k = i % params.n_half;
    let base = (t * params.n_heads + head) * params.head_dim;
    var a = base + 2u * k;
    var b = a + 1u;
    if params.neox != 0u {
        a = base + k;
        b = a + params.n_half;
    }
    let cs = angles[t * params.n_half + k];
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * cs.x - x1 * cs.y;
    x[b] = x0 * cs.y + x1 * cs.x;
}
