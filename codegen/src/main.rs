//! `moetile-codegen dump DIR`: writes every kernel specialization and its SPIR-V, MSL and HLSL
//! translations to DIR, for reading and for offline tools.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [cmd, dir] if cmd == "dump" => match moetile_codegen::dump(std::path::Path::new(dir)) {
            Ok(n) => {
                println!("wrote {n} kernels to {dir}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("usage: moetile-codegen dump DIR");
            ExitCode::from(2)
        }
    }
}
