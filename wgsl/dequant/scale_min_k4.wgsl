// The packed 6-bit scales and mins of Q4_K and Q5_K (ggml's get_scale_min_k4).
// Defines: scale_min_k4.

// (scale, min) of sub-block `sub` (0..8) from the 12 packed bytes as three words.
fn scale_min_k4(s: vec3<u32>, sub: u32) -> vec2<u32> {
    let j = 8u * (sub % 4u);
    let a = extractBits(s.x, j, 8u);
    let b = extractBits(s.y, j, 8u);
    let c = extractBits(s.z, j, 8u);
    let low = vec2<u32>(a & 63u, b & 63u);
    let high = vec2<u32>((c & 15u) | ((a >> 6u) << 4u), (c >> 4u) | ((b >> 6u) << 4u));
    return select(high, low, sub < 4u);
}

