// KV cache stored as f32.
// Defines: KvPair (two values, as attn_input writes them), kv_pack(v); KvOct (eight consecutive
// values of a cache row, as attention kernels read them), kv_oct(o); KvQuad (four),
// kv_quad(o).

alias KvPair = vec2<f32>;

fn kv_pack(v: vec2<f32>) -> KvPair {
    return v;
}

alias KvOct = array<vec4<f32>, 2>;

fn kv_oct(o: KvOct) -> array<vec4<f32>, 2> {
    return o;
}

alias KvQuad = vec4<f32>;

fn kv_quad(o: KvQuad) -> vec4<f32> {
    return o;
}
