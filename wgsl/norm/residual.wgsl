// RMS norm input with the residual add fused in: x += y in place as the norm first reads it, so
// the residual stream is updated and normalised in one dispatch.
// Defines: x (binding 1, read-write), y (binding 4), load_x(i) (stores x[i] + y[i] into x[i]).

@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read> y: array<f32>;

fn load_x(i: u32) -> f32 {
    let v = x[i] + y[i];
    x[i] = v;
    return v;
}
