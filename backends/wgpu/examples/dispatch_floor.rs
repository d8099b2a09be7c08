//! Probe: the per-dispatch cost of wgpu on an adapter. N tiny dispatches (one workgroup of 64
//! threads, each adds 1 to one u32) in one compute pass, three ways:
//!   chain : every dispatch reads and writes the same buffer (a true dependency: barrier each time)
//!   indep : dispatch i writes buffer i % 64 (wgpu still sees read-write storage usage)
//!   fresh : like chain, but a new bind group is created for every dispatch (host cost)
//! Prints host encode time, wall time to completion, and GPU time (timestamps around the pass).
use std::time::Instant;

const SHADER: &str = r#"
@group(0) @binding(0) var<storage, read_write> buf: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) i: u32) {
    if (i == 0u) { buf[0] = buf[0] + 1u; }
}
"#;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = pollster::block_on(
        instance.enumerate_adapters(wgpu::Backends::from_env().unwrap_or(wgpu::Backends::VULKAN)),
    );
    let adapter = adapters.into_iter().next().expect("no adapter");
    println!("adapter: {:?}", adapter.get_info().name);
    let ts = adapter.features().contains(wgpu::Features::TIMESTAMP_QUERY);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: None,
        required_features: if ts {
            wgpu::Features::TIMESTAMP_QUERY
        } else {
            wgpu::Features::empty()
        },
        required_limits: wgpu::Limits::default(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))
    .expect("device");
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(SHADER.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let bufs: Vec<wgpu::Buffer> = (0..64)
        .map(|_| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size: 256,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        })
        .collect();
    let layout = pipeline.get_bind_group_layout(0);
    let bind = |b: &wgpu::Buffer| {
        device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &[wgpu::BindGroupEntry {
                binding: 0,
                resource: b.as_entire_binding(),
            }],
        })
    };
    let groups: Vec<wgpu::BindGroup> = bufs.iter().map(&bind).collect();
    let qs = ts.then(|| {
        device.create_query_set(&wgpu::QuerySetDescriptor {
            label: None,
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        })
    });
    let resolve = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let period = queue.get_timestamp_period() as f64;
    for round in 0..4 {
        for mode in ["chain", "indep", "fresh"] {
            let t0 = Instant::now();
            let mut enc = device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: qs.as_ref().map(|q| wgpu::ComputePassTimestampWrites {
                        query_set: q,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    }),
                });
                pass.set_pipeline(&pipeline);
                for i in 0..n {
                    match mode {
                        "chain" => pass.set_bind_group(0, &groups[0], &[]),
                        "indep" => pass.set_bind_group(0, &groups[i % 64], &[]),
                        _ => pass.set_bind_group(0, &bind(&bufs[0]), &[]),
                    }
                    pass.dispatch_workgroups(1, 1, 1);
                }
            }
            if let Some(q) = &qs {
                enc.resolve_query_set(q, 0..2, &resolve, 0);
                enc.copy_buffer_to_buffer(&resolve, 0, &readback, 0, 16);
            }
            let cmd = enc.finish();
            let t_enc = t0.elapsed();
            queue.submit([cmd]);
            let slice = readback.slice(..);
            slice.map_async(wgpu::MapMode::Read, |_| {});
            device
                .poll(wgpu::PollType::wait_indefinitely())
                .expect("poll");
            let t_all = t0.elapsed();
            let gpu_us = {
                let d = slice.get_mapped_range().expect("mapped");
                let v: &[u64] = bytemuck::cast_slice(&d);
                (v[1].wrapping_sub(v[0])) as f64 * period / 1000.0
            };
            readback.unmap();
            if round > 0 {
                println!(
                    "{mode:5} n={n}: host encode {:.2} us/dispatch, wall {:.2} us/dispatch, GPU {:.2} us/dispatch",
                    t_enc.as_secs_f64() * 1e6 / n as f64,
                    t_all.as_secs_f64() * 1e6 / n as f64,
                    gpu_us / n as f64
                );
            }
        }
    }
}
