//! Ops that read by index or select by value: Gather (constant or run-time indices),
//! GatherND/ScatterND, GatherElements, ArgMax/ArgMin, TopK. Kernels that read indices at run
//! time check them and fail the run naming the node.

use std::sync::Arc;

use incept_ir::DType;
use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::scatter::Reduction;

use super::{BufRef, LowerError, Lowerer};
use crate::codegen::kernels::copy::CopySpec;
use crate::codegen::kernels::gather::{GatherElementsSpec, GatherSpec, IndexNdSpec, ScatterMode};
use crate::codegen::kernels::select::{ArgSpec, TopKSpec};

impl<'g> Lowerer<'g> {
    /// Gather: with constant indices, one copy per index; otherwise a checked run-time kernel.
    pub(super) fn gather(&mut self, id: NodeId, axis: usize) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let out = ValueId::new(id, 0);
        let (x, iv) = (self.in_val(id, 0), self.in_val(id, 1));
        let (Some(x), Some(iv)) = (x, iv) else { return Err(self.unsupported(id, "a missing input")) };
        let Some(idx) = self.konst(iv) else {
            return self.gather_runtime(id, x, iv, axis);
        };
        let ids = idx.to_i64s().map_err(|e| self.unsupported(id, e.to_string()))?;
        let s = self.shape(x)?;
        let (outer, d, inner): (usize, usize, usize) =
            (s[..axis].iter().product(), s[axis], s[axis + 1..].iter().product());
        let src = self.value(x)?;
        let dst = self.define(out)?;
        let elem = self.g.ty(out).dtype.size();
        for (k, &i) in ids.iter().enumerate() {
            let i = if i < 0 { i + d as i64 } else { i } as usize;
            // out[o, k, in] = x[o, i, in]
            let spec = CopySpec::new(
                &[outer, inner],
                vec![(d * inner) as isize, 1],
                vec![(ids.len() * inner) as isize, 1],
                (i * inner) as isize,
                (k * inner) as isize,
                elem,
            );
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[src], &[dst], false, &name, "Gather", 0);
        }
        Ok(())
    }

    /// Gather with indices computed at run time: a copy per output row, checked (see
    /// `GatherSpec`).
    fn gather_runtime(&mut self, id: NodeId, x: ValueId, iv: ValueId, axis: usize) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let index_bytes = self.index_bytes(id, iv)?;
        let s = self.shape(x)?;
        let count: usize = self.shape(iv)?.iter().product();
        let out = ValueId::new(id, 0);
        let spec = GatherSpec {
            outer: s[..axis].iter().product(),
            axis: s[axis],
            inner: s[axis + 1..].iter().product(),
            count,
            elem: self.g.ty(out).dtype.size(),
            index_bytes,
        };
        if spec.axis == 0 {
            return Err(self.unsupported(id, "gathering from an empty axis"));
        }
        let (src, idx) = (self.value(x)?, self.value(iv)?);
        let dst = self.define(out)?;
        let tiles = spec.tiles();
        let what = format!("an index is outside [-{0}, {0})", s[axis]);
        self.checked_index_step(Arc::new(spec), tiles, &[src, idx], dst, &name, "Gather", what);
        Ok(())
    }

    /// GatherND, or ScatterND (`scatter`): with indices known at compile time and no reduction,
    /// one copy per index tuple (after copying the data, for ScatterND); otherwise one kernel
    /// that reads the tuples at run time.
    pub(super) fn index_nd(&mut self, id: NodeId, scatter: Option<ScatterMode>) -> Result<(), LowerError> {
        const MAX_COPIES: usize = 256;
        let name = self.g.node(id).name.clone();
        let op_name = self.g.node(id).op.name();
        let (Some(x), Some(iv)) = (self.in_val(id, 0), self.in_val(id, 1)) else {
            return Err(self.unsupported(id, "a missing input"));
        };
        let xs = self.shape(x)?;
        let is = self.shape(iv)?;
        let k = *is.last().unwrap_or(&0);
        if k == 0 || k > xs.len() || xs[..k].contains(&0) {
            return Err(self.unsupported(id, format!("index tuples of length {k} into {xs:?}")));
        }
        let tuples: usize = is[..is.len() - 1].iter().product();
        let inner: usize = xs[k..].iter().product();
        let out = ValueId::new(id, 0);
        let elem = self.g.ty(out).dtype.size();
        let src = self.value(x)?;
        let dst = self.define(out)?;
        let copy = |this: &mut Self, n: usize, from: BufRef, at: usize, to: usize| {
            if n == 0 {
                return;
            }
            let spec = CopySpec::new(&[n], vec![1], vec![1], at as isize, to as isize, elem);
            let tiles = spec.tiles();
            this.step(Arc::new(spec), tiles, &[from], &[dst], false, &name, op_name, 0);
        };
        let upd = match scatter {
            Some(_) => {
                let u = self.in_val(id, 2).ok_or_else(|| self.unsupported(id, "a missing input"))?;
                let ub = self.value(u)?;
                copy(self, xs.iter().product(), src, 0, 0);
                Some(ub)
            }
            None => None,
        };
        let known = self.konst(iv).map(|t| t.to_i64s()).transpose().map_err(|e| self.unsupported(id, e.to_string()))?;
        if let (Some(ids), true) = (known, tuples <= MAX_COPIES && scatter.is_none_or(|m| m == ScatterMode::Replace)) {
            for (n, t) in ids.chunks(k).enumerate() {
                let mut o = 0usize;
                for (d, &i) in t.iter().enumerate() {
                    let len = xs[d] as i64;
                    let j = if i < 0 { i + len } else { i };
                    if j < 0 || j >= len {
                        return Err(self.unsupported(id, format!("index {i} out of range for dim {d} of size {len}")));
                    }
                    o = o * xs[d] + j as usize;
                }
                match upd {
                    Some(ub) => copy(self, inner, ub, n * inner, o * inner),
                    None => copy(self, inner, src, o * inner, n * inner),
                }
            }
            return Ok(());
        }
        let spec = IndexNdSpec { dims: xs[..k].to_vec(), inner, tuples, elem, scatter };
        let idx = self.value(iv)?;
        let tiles = spec.tiles();
        if tiles > 0 {
            let dims = xs[..k].iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
            let what = format!("an index is outside the data's dims [{dims}]");
            self.checked_index_step(Arc::new(spec), tiles, &[upd.unwrap_or(src), idx], dst, &name, op_name, what);
        }
        Ok(())
    }

    /// ScatterND: the data copied, then the updates written (or combined) at the index tuples.
    pub(super) fn scatter_nd(&mut self, id: NodeId, reduction: Reduction) -> Result<(), LowerError> {
        let mode = match reduction {
            Reduction::None => ScatterMode::Replace,
            Reduction::Add => ScatterMode::Add,
            Reduction::Mul => ScatterMode::Mul,
            Reduction::Max => ScatterMode::Max,
            Reduction::Min => ScatterMode::Min,
        };
        if mode != ScatterMode::Replace {
            self.f32_only(id, ValueId::new(id, 0))?;
        }
        self.index_nd(id, Some(mode))
    }

    pub(super) fn gather_elements(&mut self, id: NodeId, axis: usize) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let (Some(x), Some(iv)) = (self.in_val(id, 0), self.in_val(id, 1)) else {
            return Err(self.unsupported(id, "a missing input"));
        };
        let index_bytes = self.index_bytes(id, iv)?;
        let out = ValueId::new(id, 0);
        let (data_dims, idx_dims) = (self.shape(x)?, self.shape(iv)?);
        let dst = self.define(out)?;
        if idx_dims.iter().product::<usize>() == 0 {
            return Ok(());
        }
        if data_dims[axis] == 0 {
            return Err(self.unsupported(id, "gathering from an empty axis"));
        }
        let what = format!("an index is outside [-{0}, {0})", data_dims[axis]);
        let spec = GatherElementsSpec { data_dims, idx_dims, axis, elem: self.g.ty(out).dtype.size(), index_bytes };
        let (src, idx) = (self.value(x)?, self.value(iv)?);
        let tiles = spec.tiles();
        self.checked_index_step(Arc::new(spec), tiles, &[src, idx], dst, &name, "GatherElements", what);
        Ok(())
    }

    /// The byte width of indices read at run time (i32 or i64).
    fn index_bytes(&self, id: NodeId, iv: ValueId) -> Result<usize, LowerError> {
        match self.g.ty(iv).dtype {
            DType::I64 => Ok(8),
            DType::I32 => Ok(4),
            other => Err(self.unsupported(id, format!("{other} indices"))),
        }
    }

    /// A step whose kernel reads indices at run time and sets the status word when one is out
    /// of range (its operands: `reads`, then `dst` and the status word); the run then fails with
    /// `what`, naming the node.
    #[allow(clippy::too_many_arguments)]
    fn checked_index_step(
        &mut self,
        spec: Arc<dyn crate::codegen::KernelSpec>,
        tiles: usize,
        reads: &[BufRef],
        dst: BufRef,
        name: &str,
        op: &str,
        what: String,
    ) {
        let status = self.status();
        self.step(spec, tiles, reads, &[dst, status], false, name, op, 0);
        if let Some(step) = self.out.steps.last_mut() {
            step.check = Some(what);
        }
    }

    /// The input of ArgMax/ArgMin/TopK as `[outer, len, inner]` around `axis`, and whether it is f64.
    fn around_axis(&self, id: NodeId, x: ValueId, axis: usize) -> Result<(usize, usize, usize, bool), LowerError> {
        let f64 = self.f32_or_f64(id, x)?;
        let s = self.shape(x)?;
        let (outer, len, inner) = incept_ir::ops::select::split_at_axis(&s, axis);
        if len == 0 {
            return Err(self.unsupported(id, "an empty axis"));
        }
        Ok((outer, len, inner, f64))
    }

    pub(super) fn arg_reduce(&mut self, id: NodeId, a: &incept_ir::ops::ArgReduce) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let (outer, len, inner, f64) = self.around_axis(id, x, a.axis as usize)?;
        let groups = outer * inner;
        let spec = ArgSpec { groups, len, inner, max: a.max, last: a.select_last_index, f64 };
        let src = self.value(x)?;
        let dst = self.define(ValueId::new(id, 0))?;
        let op_name = self.g.node(id).op.name();
        self.step(Arc::new(spec), groups, &[src], &[dst], false, &name, op_name, 0);
        Ok(())
    }

    pub(super) fn top_k(&mut self, id: NodeId, axis: usize, largest: bool) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let x = self.in_val(id, 0).ok_or_else(|| self.unsupported(id, "a missing input"))?;
        let (outer, len, inner, f64) = self.around_axis(id, x, axis)?;
        let k = self.shape(ValueId::new(id, 0))?[axis];
        let groups = outer * inner;
        let spec = TopKSpec { groups, len, inner, k, largest, f64 };
        let src = self.value(x)?;
        let writes = [self.define(ValueId::new(id, 0))?, self.define(ValueId::new(id, 1))?];
        if k > 0 {
            self.step(Arc::new(spec), groups, &[src], &writes, false, &name, "TopK", 0);
        }
        Ok(())
    }
}
