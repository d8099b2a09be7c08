//! The plain float types F32, F16 and BF16: one little-endian value per "block".
//!
//! Each reader takes exactly `out.len()` values' worth of bytes (the caller checks the lengths).

/// F32 values as stored.
pub(crate) fn dequantize_f32(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

/// F16 widened exactly (`ggml_fp16_to_fp32` in ggml-impl.h).
pub(crate) fn dequantize_f16(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

/// BF16 is the top half of an f32, widened exactly (`ggml_compute_bf16_to_fp32` in ggml-impl.h).
pub(crate) fn dequantize_bf16(bytes: &[u8], out: &mut [f32]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
    }
}

/// Appends the values unchanged.
pub(crate) fn quantize_f32(values: &[f32], out: &mut Vec<u8>) {
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
}

/// Appends the values rounded to the nearest half, ties to even (`GGML_FP32_TO_FP16`).
pub(crate) fn quantize_f16(values: &[f32], out: &mut Vec<u8>) {
    out.extend(
        values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes()),
    );
}

/// Appends the values rounded to the nearest BF16, ties to even (`ggml_compute_fp32_to_bf16` in
/// ggml-impl.h; the same as gguf-py's `BF16.quantize_blocks`).
pub(crate) fn quantize_bf16(values: &[f32], out: &mut Vec<u8>) {
    out.extend(
        values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()),
    );
}
