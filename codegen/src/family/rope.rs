//! `rope`: rotary position embedding in place, of one matrix or of q and k at once.

use std::fmt;

use super::{Family, WG_SIZE, b};
use crate::key::{Binding, BindingKind::*};
use crate::params::{Layout, RotaryParams, layout};

/// `rope` (`pair`: a second matrix, k beside q, in the same dispatch).
pub(crate) struct Rope {
    pub(crate) pair: bool,
}

impl Family for Rope {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.pair { "rope_pair" } else { "rope" })
    }

    fn template(&self) -> &'static str {
        "rope.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        vec![if self.pair {
            "rope/pair.wgsl"
        } else {
            "rope/one.wgsl"
        }]
    }

    fn params(&self) -> Layout {
        layout::<RotaryParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        let mut list = vec![
            b(0, "params", Uniform),
            b(1, "angles", ReadOnly),
            b(2, "x", ReadWrite),
        ];
        if self.pair {
            list.push(b(3, "x2", ReadWrite));
        }
        list
    }

    fn items_per_workgroup(&self) -> Option<u32> {
        Some(WG_SIZE)
    }
}
