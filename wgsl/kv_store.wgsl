// Appends a batch to one layer's KV cache: rows pos0 .. pos0 + n_tokens of the caches (rows of
// kv_width values, n_kv_heads heads of head_dim) take the rows of k and v. Two values per
// invocation, packed as the cache stores them.
//
// Consts: WG_SIZE.
// Fragments: grid.wgsl (GridGroup, linear_index), kv/<type>.wgsl (KvPair, kv_pack).
// Params: KvParams, declared by the generator from codegen/src/params.rs.

@group(0) @binding(0) var<uniform> params: KvParams;
@group(0) @binding(1) var<storage, read> k: array<vec2<f32>>;
@group(0) @binding(2) var<storage, read> v: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read_write> k_cache: array<KvPair>;
@group(0) @binding(4) var<storage, read_write> v_cache: array<KvPair>;

@compute @workgroup_size(WG_SIZE)
fn main(grid: GridGroup, @builtin(local_invocation_index) li: u32) {
    let i = linear_index(grid, li);
    if i >= params.n_tokens * params.kv_width / 2u {
        return;
    }
    let at = params.pos0 * params.kv_width / 2u + i;
    k_cache[at] = kv_pack(k[i]);
    v_cache[at] = kv_pack(v[i]);
}
