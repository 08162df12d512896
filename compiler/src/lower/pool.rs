//! Pools: windowed max and average pools (1-D to 3-D, MaxPool's indices), global pools.

use std::sync::Arc;

use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::conv::Window;

use super::conv::{geom, vol_of};
use super::{LowerError, Lowerer};
use crate::codegen::kernels::pool::{GlobalPoolSpec, PoolSpec};
use crate::codegen::kernels::volume::VolPoolSpec;

impl<'g> Lowerer<'g> {
    pub(super) fn pool(
        &mut self,
        id: NodeId,
        max: bool,
        w: &Window,
        count_include_pad: bool,
    ) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let out = ValueId::new(id, 0);
        let (xs, os) = (self.shape(x)?, self.shape(out)?);
        if xs.len() == 5 {
            let w3 = w.in3(&xs[2..], &os[2..]);
            let (v, ends) = (vol_of(&w3), w3.ends);
            let spec = VolPoolSpec { max, v, ends, count_include_pad, indices: None };
            let src = self.value(x)?;
            let dst = self.define(out)?;
            self.step(Arc::new(spec), xs[0] * xs[1], &[src], &[dst], false, &name, self.g.node(id).op.name(), 0);
            return Ok(());
        }
        if xs.len() != 4 && xs.len() != 3 {
            return Err(self.unsupported(id, format!("{}-D pooling", xs.len().saturating_sub(2))));
        }
        let geom = geom(w, &xs, &os);
        // End pads of the last two dims.
        let ends = w.in3(&xs[2..], &os[2..]).ends;
        let (pb, pr) = (ends[1], ends[2]);
        let spec = PoolSpec { max, planes: xs[0] * xs[1], g: geom, pb, pr, count_include_pad };
        let src = self.value(x)?;
        let dst = self.define(out)?;
        let tiles = spec.planes;
        self.step(Arc::new(spec), tiles, &[src], &[dst], false, &name, self.g.node(id).op.name(), 0);
        Ok(())
    }

    /// MaxPool with its Indices output, any rank, as a volumetric pool (leading dims of 1).
    pub(super) fn max_pool_with_indices(&mut self, id: NodeId, p: &incept_ir::ops::Pool) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let (out, ind) = (ValueId::new(id, 0), ValueId::new(id, 1));
        let (xs, os) = (self.shape(x)?, self.shape(out)?);
        let nsp = xs.len() - 2;
        if !(1..=3).contains(&nsp) {
            return Err(self.unsupported(id, format!("{nsp}-D pooling")));
        }
        // Any rank as three dims, padded in front.
        let w3 = p.window.in3(&xs[2..], &os[2..]);
        let (v, ends) = (vol_of(&w3), w3.ends);
        let spec = VolPoolSpec { max: true, v, ends, count_include_pad: false, indices: Some(p.column_major_indices) };
        let src = self.value(x)?;
        let dst = self.define(out)?;
        let idx = self.define(ind)?;
        self.step(Arc::new(spec), xs[0] * xs[1], &[src], &[dst, idx], false, &name, "MaxPool", 0);
        Ok(())
    }

    /// GlobalMaxPool and GlobalAveragePool: one pass per plane.
    pub(super) fn global_pool(&mut self, id: NodeId, max: bool) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let name = node.name.clone();
        let out = ValueId::new(id, 0);
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        self.f32_only(id, x)?;
        let s = self.shape(x)?;
        let spec = GlobalPoolSpec { max, planes: s[0] * s[1], size: s[2..].iter().product() };
        let src = self.value(x)?;
        let dst = self.define(out)?;
        self.step(Arc::new(spec.clone()), spec.planes, &[src], &[dst], false, &name, node.op.name(), 0);
        Ok(())
    }
}
