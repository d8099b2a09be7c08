//! [`Recorder`]: what every op records with. It holds the context, the open encoder (with its
//! parameter arena and buffer pool) and the optional pass timer together, so an op's signature
//! lists only what the op means: its inputs, outputs and parameters.
//!
//! A backend keeps one encoder open across ops and lends it to a recorder per op
//! ([`crate::WgpuBackend`]); [`WgpuContext::record`] records into a fresh encoder and submits
//! it. The weights, KV cache and scratch buffers a session binds do not move between steps, so
//! this is also where bind groups could be kept per session.

use std::sync::Arc;

use moetile_codegen::KernelKey;
use moetile_codegen::params::WgslParams;

use crate::adapter::Profile;
use crate::buffers::Buffers;
use crate::context::WgpuContext;
use crate::encoder::{Encoder, ParamSlot};
use crate::error::Result;
use crate::kernels::Kernel;
use crate::timer::Timer;

/// A context, an open encoder and an optional timer, lent to ops (see the module docs).
#[derive(Debug)]
pub struct Recorder<'a> {
    ctx: &'a WgpuContext,
    enc: &'a mut Encoder,
    timer: Option<&'a mut Timer>,
}

impl<'a> Recorder<'a> {
    /// Records into `enc`, timing every pass with `timer` when given.
    pub(crate) fn new(
        ctx: &'a WgpuContext,
        enc: &'a mut Encoder,
        timer: Option<&'a mut Timer>,
    ) -> Recorder<'a> {
        Recorder { ctx, enc, timer }
    }

    /// The context.
    pub fn context(&self) -> &'a WgpuContext {
        self.ctx
    }

    /// What the device offers.
    pub fn profile(&self) -> &'a Profile {
        self.ctx.profile()
    }

    /// Allocation from the encoder's pool: buffers an op makes while recording (expert maps,
    /// router outputs, scratch).
    pub fn buffers(&self) -> Buffers<'_> {
        Buffers {
            ctx: self.ctx,
            pool: &self.enc.pool,
        }
    }

    /// A slot holding `params`, valid for the dispatches of this encoder.
    pub fn params<P: WgslParams>(&mut self, params: &P) -> ParamSlot {
        self.enc.params(params)
    }

    /// The command encoder, for copies and clears (ends the open compute pass).
    pub fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.enc
    }

    /// Labels the passes that follow with a sub-stage of the op, for the stage profiler
    /// (`""` clears it).
    pub fn set_detail(&mut self, detail: &'static str) {
        if let Some(t) = self.timer.as_deref_mut() {
            t.set_detail(Some(detail));
        }
    }

    /// The kernel of `key`, created on first use.
    pub(crate) fn kernel(&self, key: &KernelKey) -> Result<Arc<Kernel>> {
        self.ctx.kernels.get(self.ctx.device(), key)
    }

    /// The compute pass for the dispatches of step `label`: a pass of their own, timed, when
    /// recording with a timer, else the encoder's open one.
    pub(crate) fn pass(&mut self, label: &str) -> &mut wgpu::ComputePass<'static> {
        let timestamp_writes = self.timer.as_deref_mut().and_then(|t| t.pass_writes(label));
        self.enc.pass(label, timestamp_writes)
    }
}
