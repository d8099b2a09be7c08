//! `route`: the router, top-K experts of softmax or sigmoid gates, one workgroup per token.

use std::fmt;

use super::{Family, b};
use crate::key::{Binding, BindingKind::*};
use crate::params::{Layout, RouteParams, layout};

/// Threads per workgroup of the router (one workgroup per token; Qwen3 has 128 experts,
/// DeepSeek 256).
const ROUTE_WG_SIZE: u32 = 64;

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
        ]
    }

    fn workgroup_size(&self) -> u32 {
        ROUTE_WG_SIZE
    }

    /// A token's logits per workgroup.
    fn items_per_workgroup(&self) -> Option<u32> {
        Some(1)
    }
}
