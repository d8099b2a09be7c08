//! `eltwise_*`: in-place element-wise ops, one template with the op as a constant.

use std::fmt;

use super::{Family, WG_SIZE, b};
use crate::key::{Binding, BindingKind::*};
use crate::params::{EltParams, Layout, layout};

/// An in-place element-wise op of [`KernelKey::Eltwise`](crate::KernelKey::Eltwise)
/// (`wgsl/eltwise.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EltOp {
    /// `dst += src`, same shape (residual adds).
    Add,
    /// `dst[t] += src` for every row (biases).
    AddRow,
    /// `dst[t] *= sigmoid(src[t])`, one gate value per row (qwen2moe's shared-expert gate).
    MulSigmoidRow,
    /// `dst *= sigmoid(src)`, same shape (qwen35moe's attention output gate).
    MulSigmoid,
    /// `dst[t] = [src[t], src[t], ...]`: each row of `src` repeated along its row of `dst`
    /// (deepseek4's hyper-connection streams, each starting as the token's embedding).
    Repeat,
}

impl EltOp {
    /// Every op.
    pub const ALL: [EltOp; 5] = [
        EltOp::Add,
        EltOp::AddRow,
        EltOp::MulSigmoidRow,
        EltOp::MulSigmoid,
        EltOp::Repeat,
    ];

    /// The value of the template's `OP` constant.
    fn code(self) -> u32 {
        match self {
            EltOp::Add => 0,
            EltOp::AddRow => 1,
            EltOp::MulSigmoidRow => 2,
            EltOp::MulSigmoid => 3,
            EltOp::Repeat => 4,
        }
    }

    /// `"add"`, `"add_row"`, `"mul_sigmoid_row"`, `"mul_sigmoid"`, `"repeat"`.
    pub fn name(self) -> &'static str {
        match self {
            EltOp::Add => "add",
            EltOp::AddRow => "add_row",
            EltOp::MulSigmoidRow => "mul_sigmoid_row",
            EltOp::MulSigmoid => "mul_sigmoid",
            EltOp::Repeat => "repeat",
        }
    }
}

impl Family for EltOp {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "eltwise_{}", self.name())
    }

    fn template(&self) -> &'static str {
        "eltwise.wgsl"
    }

    fn params(&self) -> Layout {
        layout::<EltParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            b(0, "params", Uniform),
            b(1, "src", ReadOnly),
            b(2, "dst", ReadWrite),
        ]
    }

    fn consts(&self) -> Vec<(&'static str, u32)> {
        vec![("OP", self.code())]
    }

    fn items_per_workgroup(&self) -> Option<u32> {
        Some(WG_SIZE)
    }
}
