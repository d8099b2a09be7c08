//! Weights onto the device: expert tensors and vectors in moetile's GPU layouts
//! ([`crate::layout`]), and the IQ2_XXS grid table their kernels share.

use moetile::model::{GateUp, WeightData};
use wgpu::util::DeviceExt;

use crate::context::WgpuContext;
use crate::error::Result;
use crate::layout::{self, ExpertTensor};

impl WgpuContext {
    /// Uploads an expert tensor `[cols, rows, experts]` into the GPU layout, split by experts
    /// where it exceeds the device's storage binding limit.
    pub fn upload_experts(&self, w: &WeightData<'_>) -> Result<ExpertTensor> {
        self.upload_experts_with_limit(w, u64::MAX)
    }

    /// [`Self::upload_experts`] with buffers of at most `max_binding` bytes (capped by the
    /// device limit): for tests of the split path and for memory-constrained embedders.
    pub fn upload_experts_with_limit(
        &self,
        w: &WeightData<'_>,
        max_binding: u64,
    ) -> Result<ExpertTensor> {
        let limit = self.binding_limit(max_binding);
        self.scoped(&format!("uploading {}", w.name), || {
            layout::upload(self.device(), w, limit)
        })
    }

    /// The largest buffer an upload may make: `max_binding`, within the device's limits.
    fn binding_limit(&self, max_binding: u64) -> u64 {
        max_binding
            .min(self.profile().max_storage_binding)
            .min(self.profile().max_buffer)
    }

    /// Uploads a routed-MoE layer's gate and up expert tensors (`[D, F, E]` each): as one
    /// `[D, 2F, E]` tensor of interleaved rows ([`GateUp::Interleaved`], see
    /// [`crate::moe`]) when they have the same type and shape, else separately. Only the
    /// merged tensor reaches the device.
    pub fn upload_gate_up(
        &self,
        gate: &WeightData<'_>,
        up: &WeightData<'_>,
    ) -> Result<GateUp<ExpertTensor>> {
        self.upload_gate_up_with_limit(gate, up, u64::MAX)
    }

    /// [`Self::upload_gate_up`] with buffers of at most `max_binding` bytes (see
    /// [`Self::upload_experts_with_limit`]).
    pub fn upload_gate_up_with_limit(
        &self,
        gate: &WeightData<'_>,
        up: &WeightData<'_>,
        max_binding: u64,
    ) -> Result<GateUp<ExpertTensor>> {
        let limit = self.binding_limit(max_binding);
        let merged = self.scoped(&format!("uploading {}+{}", gate.name, up.name), || {
            layout::upload_interleaved(self.device(), gate, up, limit)
        })?;
        Ok(match merged {
            Some(w) => GateUp::Interleaved(w),
            None => GateUp::Separate {
                gate: self.upload_experts_with_limit(gate, max_binding)?,
                up: self.upload_experts_with_limit(up, max_binding)?,
            },
        })
    }

    /// Uploads a vector as a one-row F32 tensor (norm weights, biases): any length.
    pub fn upload_vector(&self, name: &str, values: &[f32]) -> Result<ExpertTensor> {
        self.check_size(name, (values.len() * 4) as u64)?;
        self.scoped(&format!("uploading {name}"), || {
            Ok(layout::upload_vector(self.device(), name, values))
        })
    }

    /// The IQ2_XXS grid buffer, created on first use.
    pub(crate) fn iq2xxs_grid(&self) -> &wgpu::Buffer {
        self.iq2xxs_grid.get_or_init(|| {
            self.device()
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("iq2xxs_grid"),
                    contents: &layout::iq2xxs_grid_bytes(),
                    usage: wgpu::BufferUsages::STORAGE,
                })
        })
    }
}
