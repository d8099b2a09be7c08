// mv_id prologue: activation rows read as they are.
// Defines: row_scale, value_weights.

// The factor of every value of the activation row starting at 8-value group x0.
fn row_scale(x0: u32, li: u32) -> f32 {
    return 1.0;
}

// The factors of values c .. c + 3 of a row.
fn value_weights(c: u32) -> vec4<f32> {
    return vec4<f32>(1.0);
}
