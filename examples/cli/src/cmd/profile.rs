//! `moetile profile`: one prefill of N tokens and a few decode steps with a GPU timestamp
//! around every pass, reported per stage (attention: projections, rope, attention, output
//! projection; FFN: norm, router, the routed experts' map, gate, up, activation, down, sum, and
//! the shared expert), with milliseconds and share of the total; per layer on request.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use moetile::RuntimeConfig;
use moetile::model::{Logits, Stage};
use moetile::session::Session;
use moetile_wgpu::{HostTimes, ProfileReport, WgpuBackend};

use crate::args::{GpuArgs, RuntimeArgs, RuntimeSettings, usage};
use crate::backend::gpu_backend;
use crate::model::ModelFile;

/// Arguments of `moetile profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// GGUF model file.
    #[arg(short, long, value_name = "FILE.gguf")]
    model: PathBuf,
    /// Prompt tokens to prefill (drawn from the vocabulary with a fixed seed).
    #[arg(
        short = 'p',
        long = "prompt-tokens",
        value_name = "N",
        default_value_t = 512
    )]
    prompt_tokens: usize,
    /// Decode steps to profile after the prefill.
    #[arg(short = 'n', long = "decode", value_name = "N", default_value_t = 4)]
    decode: usize,
    /// Also print every layer's stages.
    #[arg(long)]
    per_layer: bool,
    #[command(flatten)]
    gpu: GpuArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// Runs `moetile profile`.
pub fn run(args: ProfileArgs) -> Result<()> {
    if args.prompt_tokens == 0 {
        return Err(usage("invalid --prompt-tokens = 0: at least 1".to_string()));
    }
    let runtime: RuntimeSettings = args.runtime.resolve()?;
    let adapter = args.gpu.choice()?;
    let file = ModelFile::open(&args.model)?;
    let n_tokens = args.prompt_tokens + args.decode;
    // Without --ctx, the context holds exactly the profiled tokens.
    let config = RuntimeConfig {
        ctx: runtime.config.ctx.or(Some(n_tokens)),
        ..runtime.config.clone()
    };
    let config = file.session_config(&config, n_tokens)?;
    let (mut gpu, info) = gpu_backend(&adapter, &file)?;
    let (model, _) = file.load(&mut gpu, config.n_ctx(&file.config))?;
    let runtime = RuntimeSettings::new(info.tuned(&config));
    let config = &runtime.config;
    let tokens = prompt(args.prompt_tokens, file.config.n_vocab);

    // A first, untimed pass compiles every pipeline; a second gives the wall-clock times,
    // which the timed pass would inflate by its timestamp queries.
    let run = |gpu: &mut WgpuBackend, profile: bool| -> Result<Pass> {
        let mut session = Session::new(&model, gpu, config)?;
        gpu.set_profiling(profile)
            .context("moetile profile needs GPU timestamp queries")?;
        gpu.take_host_times();
        let start = Instant::now();
        let cpu = thread_cpu_time();
        let logits = session.prefill(&model, gpu, &tokens, Logits::Last)?;
        let prefill_wall = Wall::since(start, cpu, gpu.take_host_times());
        let prefill = gpu.take_profile().unwrap_or_default();
        let mut next = argmax(&logits);
        let start = Instant::now();
        let cpu = thread_cpu_time();
        for _ in 0..args.decode {
            next = argmax(&session.decode(&model, gpu, next)?);
        }
        let decode_wall = Wall::since(start, cpu, gpu.take_host_times());
        let decode = gpu.take_profile().unwrap_or_default();
        Ok(Pass {
            prefill,
            decode,
            prefill_wall,
            decode_wall,
        })
    };
    run(&mut gpu, false)?;
    let wall = run(&mut gpu, false)?;
    let timed = run(&mut gpu, true)?;
    println!(
        "moetile profile {}: {} on {} ({}), chunk {}, tiles {}",
        file.path.display(),
        file.config.arch.name(),
        info.description,
        info.driver,
        config.chunk,
        runtime.tiles()
    );
    print_report(
        &format!("prefill of {} tokens", tokens.len()),
        &timed.prefill,
        &wall.prefill_wall,
        args.per_layer,
    );
    if args.decode > 0 {
        print_report(
            &format!("{} decode steps", args.decode),
            &timed.decode,
            &wall.decode_wall,
            args.per_layer,
        );
        let w = &wall.decode_wall;
        let steps = args.decode as f64;
        let ms = |d: Duration| d.as_secs_f64() * 1e3 / steps;
        let dispatches = w.host.dispatches as f64 / steps;
        let cpu = w
            .cpu
            .map_or(String::new(), |cpu| format!(" (CPU {:.3} ms)", ms(cpu)));
        println!(
            "\nper decode step: {:.3} ms wall-clock, host busy {:.3} ms{cpu}, {dispatches:.0} \
             dispatch steps ({:.1} per layer)",
            ms(w.total),
            ms(w.total.saturating_sub(w.host.waiting)),
            dispatches / file.config.n_layers as f64
        );
    }
    Ok(())
}

/// One profiled run: GPU time per stage (when timed) and wall-clock time.
struct Pass {
    prefill: ProfileReport,
    decode: ProfileReport,
    prefill_wall: Wall,
    decode_wall: Wall,
}

/// Wall-clock time of some work, and where the host spent it.
struct Wall {
    total: Duration,
    host: HostTimes,
    /// CPU time of this thread, where the OS tells it: "host busy" also counts time blocked
    /// inside the driver (lavapipe's submit waits for its queue thread), this does not.
    cpu: Option<Duration>,
}

impl Wall {
    /// The work since `start`, when this thread had used `cpu`.
    fn since(start: Instant, cpu: Option<Duration>, host: HostTimes) -> Wall {
        Wall {
            total: start.elapsed(),
            host,
            cpu: thread_cpu_time().zip(cpu).map(|(now, then)| now - then),
        }
    }
}

/// CPU time this thread has run (Linux: the first field of `/proc/thread-self/schedstat`, in
/// nanoseconds); `None` elsewhere.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// `n` token ids spread over the vocabulary by a fixed linear congruential sequence: the
/// same prompt every run, with varied routing.
fn prompt(n: usize, n_vocab: usize) -> Vec<u32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % n_vocab as u64) as u32
        })
        .collect()
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// The bucket a row belongs to: attention or FFN half, and a readable name.
fn bucket(stage: Option<Stage>, detail: Option<&str>) -> (&'static str, String) {
    let half = match stage {
        Some(Stage::QkvProj | Stage::Attention | Stage::OutProj) => "attention",
        Some(Stage::Router | Stage::Experts | Stage::SharedExpert | Stage::DenseFfn) => "ffn",
        _ => "other",
    };
    let name = match (stage, detail) {
        (Some(s), Some(d)) => format!("{}/{d}", s.name()),
        (Some(s), None) => s.name().to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => "unlabelled".to_string(),
    };
    (half, name)
}

/// The sub-stages in the order they run: attention's input, prefill or decode and combine;
/// the router's top-K after its logits; the routed-MoE ones (gate and up separate or as one
/// tensor; the mat-vec path's fused `gate_up_act` and `down_sum`); others after them.
fn sub_stage_rank(detail: &str) -> usize {
    [
        "input",
        "prefill",
        "decode",
        "combine",
        "top_k",
        "map",
        "gate",
        "up",
        "gate_up",
        "gate_up_act",
        "act",
        "down",
        "down_sum",
        "sum",
    ]
    .iter()
    .position(|d| *d == detail)
    .unwrap_or(usize::MAX)
}

/// The table of `report`, headed by its GPU total against `wall`, the same work's wall-clock
/// time in an untimed run, and the host's busy part of that (wall-clock minus waiting for the
/// GPU: encoding and submitting). Wall-clock above both GPU and host time is the GPU's idle
/// gaps between passes and the host waiting on work it submitted last.
fn print_report(title: &str, report: &ProfileReport, wall: &Wall, per_layer: bool) {
    let total = report.total_ms();
    let wall_ms = wall.total.as_secs_f64() * 1e3;
    let host_ms = wall_ms - wall.host.waiting.as_secs_f64() * 1e3;
    let cpu = wall.cpu.map_or(String::new(), |cpu| {
        format!(", on the CPU {:.3} ms", cpu.as_secs_f64() * 1e3)
    });
    println!(
        "\n{title}: {total:.3} ms of GPU time in passes; untimed: {wall_ms:.3} ms wall-clock, \
         of which the host was busy {host_ms:.3} ms ({:.3} ms submitting{cpu}); {} dispatch \
         steps",
        wall.host.submitting.as_secs_f64() * 1e3,
        wall.host.dispatches
    );
    println!("| bucket | stage | ms | share |");
    println!("|---|---|---:|---:|");
    let mut halves: BTreeMap<&str, f64> = BTreeMap::new();
    let mut stages = report.by_stage();
    stages.sort_by_key(|&(stage, detail, _)| (stage, detail.map(sub_stage_rank)));
    for (stage, detail, ms) in stages {
        let (half, name) = bucket(stage, detail);
        *halves.entry(half).or_default() += ms;
        println!("| {half} | {name} | {ms:.3} | {:.1}% |", share(ms, total));
    }
    for (half, ms) in &halves {
        println!("| {half} | (total) | {ms:.3} | {:.1}% |", share(*ms, total));
    }
    if report.untimed_passes > 0 {
        println!(
            "({} passes ran untimed: more than the timer holds per submission)",
            report.untimed_passes
        );
    }
    if per_layer {
        println!("\n| layer | stage | ms | share |");
        println!("|---:|---|---:|---:|");
        for row in &report.rows {
            let layer = row.layer.map_or("-".to_string(), |l| l.to_string());
            let (_, name) = bucket(row.stage, row.detail);
            println!(
                "| {layer} | {name} | {:.3} | {:.1}% |",
                row.ms,
                share(row.ms, total)
            );
        }
    }
}

fn share(ms: f64, total: f64) -> f64 {
    if total > 0.0 { 100.0 * ms / total } else { 0.0 }
}
