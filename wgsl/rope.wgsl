// Rotary position embedding in place. Row t of x holds n_heads heads of head_dim values; the
// first 2 * n_half values of each head rotate by the angles of row t of `angles`, whose entry k
// is (cos, sin) of position(t) * freq_k (computed on the host in f64, as the CPU reference
// does): pairs (k, k + n_half) in the NeoX layout, (2k, 2k + 1) in the normal one. The rest of
// each head passes through. One invocation per rotated pair. With rope/pair.wgsl a second
// matrix m = 1 of n_heads2 heads per row (k beside q) follows: invocations past the first
// matrix's pairs rotate its pairs by the same angles.
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index), rope/one.wgsl or rope/pair.wgsl (load_x,
// store_x).
// Params: RotaryParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: RotaryParams;
@group(0) @binding(1) var<storage, read> angles: array<vec2<f32>>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    var i = linear_index(grid, li);
    var m = 0u;
    var n_heads = params.n_heads;
    let n_first = params.n_rows * n_heads * params.n_half;
    if i >= n_first {
        i -= n_first;
        m = 1u;
        n_heads = params.n_heads2;
    }
    let per_row = n_heads * params.n_half;
    if i >= params.n_rows * per_row {
        return;
    }
    let t = i / per_row;
    let head = (i % per_row) / params.n_half;
    let k = i % params.n_half;
    let base = (t * n_heads + head) * params.head_dim;
    var a = base + 2u * k;
    var b = a + 1u;
    if params.neox != 0u {
        a = base + k;
        b = a + params.n_half;
    }
    let cs = angles[t * params.n_half + k];
    let x0 = load_x(m, a);
    let x1 = load_x(m, b);
    store_x(m, a, x0 * cs.x - x1 * cs.y);
    store_x(m, b, x0 * cs.y + x1 * cs.x);
}
