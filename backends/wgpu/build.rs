//! Generates and validates every kernel specialization (`KernelKey::all()`) with naga and writes
//! the table `src/kernels.rs` compiles in. Any invalid shader fails the build with its key.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if let Err(e) = moetile_codegen::write_kernel_table(&out) {
        panic!("kernel generation failed: {e}");
    }
}
