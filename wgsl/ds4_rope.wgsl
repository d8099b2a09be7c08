// deepseek4's partial interleaved RoPE (ggml's mode NORM with an offset), in place: in each
// head of `head_dim` values of each of `n_rows` rows, only the last `n_rot` rotate, in pairs
// (off + 2k, off + 2k + 1) with off = head_dim - n_rot, by the angle of pair k at the row's
// position pos0 + row * pos_step:
//   x0' = x0 cos - x1 sin,   x1' = x0 sin + x1 cos   (sin negated for the inverse rotation).
// The (cos, sin) pairs come from a host table computed in f64, (position, pair)-major.
// One thread per rotated pair.
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index).
// Params: RopeTailParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: RopeTailParams;
@group(0) @binding(1) var<storage, read> angles: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let i = linear_index(grid, li);
    let half = params.n_rot / 2u;
    let per_row = params.n_heads * half;
    if i >= params.n_rows * per_row {
        return;
    }
    let row = i / per_row;
    let head = (i - row * per_row) / half;
    let k = i - row * per_row - head * half;
    let pos = params.pos0 + row * params.pos_step;
    let cs = angles[pos * half + k];
    let sin = select(cs.y, -cs.y, params.inverse == 1u);
    let at = (row * params.n_heads + head) * params.head_dim + params.head_dim - params.n_rot + 2u * k;
    let x0 = x[at];
    let x1 = x[at + 1u];
    x[at] = x0 * cs.x - x1 * sin;
    x[at + 1u] = x0 * sin + x1 * cs.x;
}
