// KV cache stored as f32.
// Defines: KvPair (element of a cache), kv_pack(v), kv_unpack(p): two values as one element.

alias KvPair = vec2<f32>;

fn kv_pack(v: vec2<f32>) -> KvPair {
    return v;
}

fn kv_unpack(p: KvPair) -> vec2<f32> {
    return p;
}
