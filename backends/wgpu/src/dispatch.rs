//! One kernel pass, as every op encodes it: the pipeline from the cache, bind groups by binding
//! name, workgroups from the key's geometry. Ops check shapes and write parameters; this is
//! the rest.

use moetile_codegen::{KernelKey, WeightType};

use crate::error::{Result, WgpuError};
use crate::recorder::Recorder;

/// `(binding name, resource)` pairs of one bind group (see [`crate::kernels::Kernel::bind`]).
pub(crate) type Bindings<'a> = [(&'a str, wgpu::BindingResource<'a>)];

/// The workgroups of a dispatch: sized by the key, or by what the key's geometry produced.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Grid<'a> {
    /// `n` items on the folded 1-D grid of `wgsl/grid.wgsl`,
    /// [`KernelKey::items_per_workgroup`] per workgroup.
    Items(usize),
    /// `(x, y)` workgroups.
    Groups(u32, u32),
    /// `(x, y, z)` workgroups.
    Groups3(u32, u32, u32),
    /// Workgroup counts a kernel wrote to a buffer, at a byte offset.
    Indirect(&'a wgpu::Buffer, u64),
}

impl Recorder<'_> {
    /// Encodes a pass running `key`'s `main` over `grid` with the bind group of `bindings`.
    pub(crate) fn dispatch(
        &mut self,
        key: &KernelKey,
        bindings: &Bindings<'_>,
        grid: Grid<'_>,
    ) -> Result<()> {
        self.dispatch_each(key, &[bindings], grid)
    }

    /// [`Self::dispatch`] once per set of bindings, in one pass (one set per weight chunk).
    /// Every set gets the IQ2_XXS grid table where the key's binding table has it.
    pub(crate) fn dispatch_each<'b, S: AsRef<Bindings<'b>>>(
        &mut self,
        key: &KernelKey,
        sets: &[S],
        grid: Grid<'_>,
    ) -> Result<()> {
        let kernel = self.kernel(key)?;
        let grid = match grid {
            Grid::Items(n) => {
                let per = key
                    .items_per_workgroup()
                    .unwrap_or_else(|| panic!("{key} is not dispatched over a linear grid"));
                let (x, y) = self.linear_grid(kernel.name(), n, per)?;
                Grid::Groups(x, y)
            }
            other => other,
        };
        let limit = self.profile().max_workgroups_per_dim;
        let dims = match grid {
            Grid::Groups(x, y) => Some([x, y, 1]),
            Grid::Groups3(x, y, z) => Some([x, y, z]),
            _ => None,
        };
        if let Some(big) = dims.into_iter().flatten().find(|&g| g > limit) {
            return Err(WgpuError::GridTooLarge {
                op: kernel.name().to_string(),
                groups: u64::from(big),
                limit,
            });
        }
        let ctx = self.context();
        let table = key
            .weight()
            .is_some_and(WeightType::uses_grid)
            .then(|| ("iq2xxs_grid", ctx.iq2xxs_grid().as_entire_binding()));
        let binds = sets
            .iter()
            .map(|set| match &table {
                None => kernel.bind(ctx.device(), set.as_ref()),
                Some(table) => {
                    let entries: Vec<_> = set
                        .as_ref()
                        .iter()
                        .cloned()
                        .chain([table.clone()])
                        .collect();
                    kernel.bind(ctx.device(), &entries)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let pass = self.pass(kernel.name());
        pass.set_pipeline(kernel.pipeline("main"));
        for bind in &binds {
            pass.set_bind_group(0, &bind.group, &bind.offsets);
            match grid {
                Grid::Groups(x, y) => pass.dispatch_workgroups(x, y, 1),
                Grid::Groups3(x, y, z) => pass.dispatch_workgroups(x, y, z),
                Grid::Indirect(args, offset) => pass.dispatch_workgroups_indirect(args, offset),
                Grid::Items(_) => unreachable!("resolved to workgroups above"),
            }
        }
        Ok(())
    }

    /// Workgroups `(x, y)` covering `n` invocations of `wg_size` in a folded 1-D grid (see
    /// `wgsl/grid.wgsl`).
    fn linear_grid(&self, op: &str, n: usize, wg_size: u32) -> Result<(u32, u32)> {
        let groups = n.div_ceil(wg_size as usize) as u64;
        let max = self.profile().max_workgroups_per_dim as u64;
        let y = groups.div_ceil(max).max(1);
        if y > max {
            return Err(WgpuError::GridTooLarge {
                op: op.to_string(),
                groups,
                limit: self.profile().max_workgroups_per_dim,
            });
        }
        Ok((groups.min(max) as u32, y as u32))
    }
}
