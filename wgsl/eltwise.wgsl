// In-place element-wise ops on a (rows, n_cols) f32 matrix `dst` with an operand `src`; the
// key's OP picks one:
//   OP_ADD:             dst[i] += src[i]                    (residual add: same shape)
//   OP_ADD_ROW:         dst[i] += src[i % n_cols]           (bias: one row)
//   OP_MUL_SIGMOID_ROW: dst[i] *= sigmoid(src[i / n_cols])  (a gate per row: one column)
//   OP_MUL_SIGMOID:     dst[i] *= sigmoid(src[i])           (a gate per value: same shape)
//   OP_REPEAT:          dst[i] = src[i / n_cols * src_cols + i % src_cols]
//                                          (each row of src repeated along its row of dst)
//
// Consts: WG_SIZE, OP.
// Fragments: grid.wgsl (GridGroup, linear_index).
// Params: EltParams, declared by the generator from codegen/src/params.rs.

const OP_ADD: u32 = 0u;
const OP_ADD_ROW: u32 = 1u;
const OP_MUL_SIGMOID_ROW: u32 = 2u;
const OP_MUL_SIGMOID: u32 = 3u;
const OP_REPEAT: u32 = 4u;
const_assert OP <= OP_REPEAT;

@group(0) @binding(0) var<uniform> params: EltParams;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let i = linear_index(grid, li);
    if i >= params.n_values {
        return;
    }
    switch OP {
        case OP_ADD: {
            dst[i] += src[i];
        }
        case OP_ADD_ROW: {
            dst[i] += src[i % params.n_cols];
        }
        case OP_MUL_SIGMOID_ROW: {
            dst[i] *= 1.0 / (1.0 + exp(-src[i / params.n_cols]));
        }
        case OP_MUL_SIGMOID: {
            dst[i] *= 1.0 / (1.0 + exp(-src[i]));
        }
        default: {
            dst[i] = src[i / params.n_cols * params.src_cols + i % params.src_cols];
        }
    }
}
