//! `embed`: rows of a weight table, dequantized (the token embedding), per weight type.

use std::fmt;

use super::{Family, WG_SIZE, b};
use crate::key::{Binding, BindingKind::*};
use crate::params::{EmbedParams, Layout, layout};
use crate::weights::WeightType;

/// `embed`: one thread per output value.
pub(crate) struct Embed {
    pub(crate) weight: WeightType,
}

impl Family for Embed {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "embed_{}", self.weight.short_name())
    }

    fn template(&self) -> &'static str {
        "embed.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        self.weight.fragments().to_vec()
    }

    fn params(&self) -> Layout {
        layout::<EmbedParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            b(0, "params", Uniform),
            b(1, "weights", ReadOnly),
            b(2, "ids", ReadOnly),
            b(3, "out", ReadWrite),
        ]
    }

    fn items_per_workgroup(&self) -> Option<u32> {
        Some(WG_SIZE)
    }

    fn weight(&self) -> Option<WeightType> {
        Some(self.weight)
    }
}
