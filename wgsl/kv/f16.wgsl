// KV cache stored as IEEE halves, two per u32 (no SHADER_F16 needed).
// Defines: KvPair (two values, as attn_input writes them), kv_pack(v); KvOct (eight consecutive
// values of a cache row, as attention kernels read them: one 16-byte load), kv_oct(o),
// kv_oct_pack(a, b); KvQuad (four, one 8-byte load), kv_quad(o), kv_quad_pack(v).

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

fn kv_oct_pack(a: vec4<f32>, b: vec4<f32>) -> KvOct {
    return KvOct(pack2x16float(a.xy), pack2x16float(a.zw), pack2x16float(b.xy), pack2x16float(b.zw));
}

alias KvQuad = vec2<u32>;

fn kv_quad(o: KvQuad) -> vec4<f32> {
    return vec4<f32>(unpack2x16float(o.x), unpack2x16float(o.y));
}

fn kv_quad_pack(v: vec4<f32>) -> KvQuad {
    return KvQuad(pack2x16float(v.xy), pack2x16float(v.zw));
}
