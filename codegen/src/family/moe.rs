//! The routed-expert kernels around the grouped matmuls: `map` (routing ids to expert-major
//! lists and the matmuls' work list), `act` (the gated activation between them, of separate or
//! interleaved gate and up) and `sum` (the weighted experts of each token added up).

use std::fmt;

use super::{Family, WG_SIZE, b, mid_fragment};
use crate::key::{ActType, Binding, BindingKind::*};
use crate::params::{ActParams, Layout, MapParams, SumParams, layout};
use crate::tile::TileWidth;

/// Indirect-dispatch argument slots the map writes (one per distinct row-tile count).
pub const MAP_DISPATCH_SLOTS: usize = 4;

/// `map`: the lists of one token-tile width.
pub(crate) struct Map {
    pub(crate) tile: TileWidth,
}

impl Family for Map {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "map_t{}", self.tile)
    }

    fn template(&self) -> &'static str {
        "map.wgsl"
    }

    fn params(&self) -> Layout {
        layout::<MapParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        vec![
            b(0, "params", Uniform),
            b(1, "ids", ReadOnly),
            b(2, "chunk_counts", ReadWrite),
            b(3, "ranks", ReadWrite),
            b(4, "experts", ReadWrite),
            b(5, "list", ReadWrite),
            b(6, "items", ReadWrite),
            b(7, "dispatch", ReadWrite),
        ]
    }

    fn consts(&self) -> Vec<(&'static str, u32)> {
        vec![("DISPATCH_SLOTS", MAP_DISPATCH_SLOTS as u32)]
    }

    fn entry_points(&self) -> &'static [&'static str] {
        &["count", "scan", "fill"]
    }

    fn tokens_per_workgroup(&self) -> Option<u32> {
        Some(self.tile.tokens() as u32)
    }

    fn tile(&self) -> Option<TileWidth> {
        Some(self.tile)
    }
}

/// `act`: `mid = act(gate, up) * route_weight`, `mid` stored as `mid`; gate and up as two
/// matrices, or as one of interleaved columns.
pub(crate) struct Act {
    pub(crate) mid: ActType,
    pub(crate) interleaved: bool,
    pub(crate) biased: bool,
}

/// The suffix naming a kernel that adds the experts' biases.
fn biased_suffix(biased: bool) -> &'static str {
    if biased { "_biased" } else { "" }
}

impl Family for Act {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let input = if self.interleaved { "interleaved_" } else { "" };
        let biased = biased_suffix(self.biased);
        write!(f, "act{biased}_{input}{}", self.mid.name())
    }

    fn template(&self) -> &'static str {
        "act.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        vec![
            mid_fragment(self.mid),
            "glu/swiglu.wgsl",
            if self.interleaved {
                "glu/interleaved.wgsl"
            } else {
                "glu/separate.wgsl"
            },
            if self.biased {
                "bias/glu.wgsl"
            } else {
                "bias/no_glu.wgsl"
            },
        ]
    }

    fn params(&self) -> Layout {
        layout::<ActParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        // gate and up: bindings 1 and 2, or one interleaved matrix at 1.
        let inputs = if self.interleaved {
            vec![b(1, "gate_up", ReadOnly)]
        } else {
            vec![b(1, "gate", ReadOnly), b(2, "up", ReadOnly)]
        };
        let biases = if self.biased {
            vec![
                b(5, "ids", ReadOnly),
                b(6, "gate_bias", ReadOnly),
                b(7, "up_bias", ReadOnly),
            ]
        } else {
            vec![]
        };
        [
            vec![b(0, "params", Uniform)],
            inputs,
            vec![b(3, "route", ReadOnly), b(4, "mid", ReadWrite)],
            biases,
        ]
        .concat()
    }

    fn items_per_workgroup(&self) -> Option<u32> {
        Some(WG_SIZE)
    }
}

/// `sum`: `out[t] = sum_k y[t * K + k]`, with or without the experts' down biases.
pub(crate) struct Sum {
    pub(crate) biased: bool,
}

impl Family for Sum {
    fn write_name(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sum{}", biased_suffix(self.biased))
    }

    fn template(&self) -> &'static str {
        "sum.wgsl"
    }

    fn fragments(&self) -> Vec<&'static str> {
        if self.biased {
            vec!["bias/down.wgsl"]
        } else {
            vec!["bias/no_down.wgsl"]
        }
    }

    fn params(&self) -> Layout {
        layout::<SumParams>()
    }

    fn bindings(&self) -> Vec<Binding> {
        let mut list = vec![
            b(0, "params", Uniform),
            b(1, "y", ReadOnly),
            b(2, "out", ReadWrite),
        ];
        if self.biased {
            list.extend([
                b(3, "ids", ReadOnly),
                b(4, "route", ReadOnly),
                b(5, "down_bias", ReadOnly),
            ]);
        }
        list
    }

    fn items_per_workgroup(&self) -> Option<u32> {
        Some(WG_SIZE)
    }
}
