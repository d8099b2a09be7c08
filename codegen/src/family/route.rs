//! `route`: the router, K experts of softmax, sigmoid or sqrt-softplus gates (the top K, the
//! top K of gate + bias, or given ids), one workgroup per token.

use std::fmt;

use super::{Family, b};
use crate::key::{Binding, BindingKind::*};
use crate::params::{Layout, RouteParams, layout};

/// Threads per workgroup of the router (one workgroup per token, a thread per expert for
/// Qwen3's 128, two for DeepSeek's 256).
const ROUTE_WG_SIZE: u32 = 128;
/// Experts a router row may have: the row lives in workgroup memory (8 KiB; the models we
/// know have at most 512 experts).
pub const ROUTE_MAX_EXPERTS: u32 = 2048;
/// Experts a token may use (the selection lives in workgroup memory; models use up to ~22).
pub const ROUTE_MAX_USED: u32 = 64;

/// `route`.
pub(crate) struct Route;

impl Family for Route {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("route")
    }

    fn template(&self) -> &'static str {
        "route.wgsl"
    }

    fn params(&self) -> Layout {
        layout::<RouteParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            b(0, "params", Uniform),
            b(1, "logits", ReadOnly),
            b(2, "ids", ReadWrite),
            b(3, "weights", ReadWrite),
            b(4, "bias", ReadOnly),
            b(5, "given", ReadOnly),
        ]
    }

    fn workgroup_size(&self) -> u32 {
        ROUTE_WG_SIZE
    }

    fn consts(&self) -> Vec<(&'static str, u32)> {
        vec![
            ("MAX_EXPERTS", ROUTE_MAX_EXPERTS),
            ("MAX_USED", ROUTE_MAX_USED),
        ]
    }

    /// A token's logits per workgroup.
    fn items_per_workgroup(&self) -> Option<u32> {
        Some(1)
    }
}
