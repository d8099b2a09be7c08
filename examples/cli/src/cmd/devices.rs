//! `moetile devices`: every adapter wgpu sees, what each offers the kernels, and the one
//! moetile would pick with the same `--device`/`--backend`.

use anyhow::Result;
use clap::Args;
use moetile_wgpu::Profile;
use moetile_wgpu::adapter::{instance, list_adapters, select};
use moetile_wgpu::tune::{AdapterId, TuningRecord};
use serde::Serialize;

use crate::args::{GpuArgs, api_names};

/// Arguments of `moetile devices`.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    gpu: GpuArgs,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
}

/// One adapter as reported.
#[derive(Debug, Serialize)]
struct Device {
    index: usize,
    name: String,
    backend: String,
    device_type: String,
    driver: String,
    selected: bool,
    shader_f16: bool,
    subgroups: bool,
    subgroup_sizes: (u32, u32),
    timestamps: bool,
    /// `MxNxK A->C` per cooperative-matrix configuration.
    cooperative_matrix: Vec<String>,
    /// The matmul paths moetile runs on it.
    paths: Vec<&'static str>,
    /// `path: kernel (reason)` per path `moetile tune` found wrong on it (the tuning record).
    unusable_paths: Vec<String>,
    max_storage_binding_bytes: u64,
    max_buffer_bytes: u64,
    max_workgroup_storage_bytes: u32,
    max_workgroups_per_dimension: u32,
}

/// Runs `moetile devices`.
pub fn run(args: DevicesArgs) -> Result<()> {
    let options = args.gpu.resolve()?;
    let instance = instance(&options);
    let adapters = list_adapters(&instance);
    let searched = if options.backends == wgpu::Backends::all() {
        String::new()
    } else {
        format!(" for WGPU_BACKEND={}", api_names(options.backends))
    };
    anyhow::ensure!(
        !adapters.is_empty(),
        "wgpu finds no adapter{searched}; install a GPU driver with Vulkan, Metal or DX12 (on Linux without a GPU, Mesa's lavapipe: mesa-vulkan-drivers)",
    );
    // The selection error lists the adapters; report it after the listing.
    let selected = select(&instance, &options).map(|a| a.get_info());
    let record = TuningRecord::load_or_default(options.tuning_dir.as_deref());
    let devices: Vec<Device> = adapters
        .iter()
        .enumerate()
        .map(|(index, adapter)| {
            let mut p = Profile::of_adapter(adapter);
            let unusable = record.of_adapter(&AdapterId::of(&p)).unusable;
            for u in &unusable {
                p.avoid(u);
            }
            Device {
                index,
                selected: selected.as_ref().is_ok_and(|s| *s == adapter.get_info()),
                name: p.name.clone(),
                backend: format!("{:?}", p.backend),
                device_type: format!("{:?}", p.device_type),
                driver: p.driver.clone(),
                shader_f16: p.shader_f16,
                subgroups: p.subgroups,
                subgroup_sizes: p.subgroup_sizes,
                timestamps: p.timestamps,
                cooperative_matrix: p
                    .coop
                    .iter()
                    .map(|c| {
                        format!(
                            "{}x{}x{} {:?}->{:?}",
                            c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type
                        )
                    })
                    .collect(),
                paths: p.paths().into_iter().map(|path| path.name()).collect(),
                unusable_paths: unusable
                    .iter()
                    .map(|u| format!("{}: {} ({})", u.path.name(), u.kernel, u.reason))
                    .collect(),
                max_storage_binding_bytes: p.max_storage_binding,
                max_buffer_bytes: p.max_buffer,
                max_workgroup_storage_bytes: p.max_workgroup_storage,
                max_workgroups_per_dimension: p.max_workgroups_per_dim,
            }
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&devices)?);
    } else {
        for d in &devices {
            print_device(d);
        }
    }
    selected?;
    Ok(())
}

fn print_device(d: &Device) {
    let yes = |b: bool| if b { "yes" } else { "no" };
    let mark = if d.selected {
        "  <- moetile picks this one"
    } else {
        ""
    };
    println!("[{}] {}{mark}", d.index, d.name);
    println!("    {} {}, driver {}", d.backend, d.device_type, d.driver);
    if d.device_type == "Cpu" {
        println!("    a CPU adapter: correct, but orders of magnitude slower than a GPU");
    }
    println!(
        "    f16 {} | subgroups {} ({}..{} lanes) | timestamps {}",
        yes(d.shader_f16),
        yes(d.subgroups),
        d.subgroup_sizes.0,
        d.subgroup_sizes.1,
        yes(d.timestamps)
    );
    let coop = match d.cooperative_matrix.as_slice() {
        [] => "none".to_string(),
        configs => configs.join(", "),
    };
    println!("    cooperative matrix: {coop}");
    println!("    matmul paths: {}", d.paths.join(", "));
    for u in &d.unusable_paths {
        println!("    found wrong by `moetile tune`: {u}");
    }
    println!(
        "    limits: storage binding {}, buffer {}, workgroup memory {}, {} workgroups per dimension",
        indicatif::BinaryBytes(d.max_storage_binding_bytes),
        indicatif::BinaryBytes(d.max_buffer_bytes),
        indicatif::BinaryBytes(d.max_workgroup_storage_bytes.into()),
        d.max_workgroups_per_dimension
    );
}
