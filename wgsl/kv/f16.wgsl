// KV cache stored as IEEE halves, two per u32 (no SHADER_F16 needed).
// Defines: KvPair (two values, as attn_input writes them), kv_pack(v); KvOct (eight consecutive
// values of a cache row, as attention kernels read them: one 16-byte load), kv_oct(o);
// KvQuad (four, one 8-byte load), kv_quad(o).

alias KvPair = u32;

fn kv_pack(v: vec2<f32>) -> KvPair {
    return pack2x16float(v);
}

alias KvOct = vec4<u32>;

fn kv_oct(o: KvOct) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(
        vec4<f32>(unpack2x16float(o.x), unpack2x16float(o.y)),
        vec4<f32>(unpack2x16float(o.z), unpack2x16float(o.w)),
    );
}

alias KvQuad = vec2<u32>;

fn kv_quad(o: KvQuad) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(o.x), unpack2x16float(o.y));
}
