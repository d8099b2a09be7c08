// KV cache stored as IEEE halves, two per u32 (no SHADER_F16 needed).
// Defines: KvPair (element of a cache), kv_pack(v), kv_unpack(p): two values as one element.

alias KvPair = u32;

fn kv_pack(v: vec2<f32>) -> KvPair {
    return pack2x16float(v);
}

fn kv_unpack(p: KvPair) -> vec2<f32> {
    return unpack2x16float(p);
}
