//! Gemm and MatMul (any batch broadcasting) on the GEMM kernel, and f64 MatMul.

use std::sync::Arc;

use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::{Binary, Step};

use super::linear::{AddLayout, balanced};
use super::{BufRef, LowerError, Lowerer};
use crate::codegen::bf16::Bf16Tier;
use crate::codegen::kernels::copy::CopySpec;
use crate::codegen::kernels::elementwise::ElementwiseSpec;
use crate::codegen::kernels::gemm::{GemmSpec, Mat};
use crate::codegen::kernels::math::{Bin, KExpr};
use crate::codegen::kernels::nd::{broadcast_strides, contiguous};
use crate::codegen::kernels::typed::F64MatMulSpec;

impl<'g> Lowerer<'g> {
    /// Gemm and MatMul: `Y = alpha * A' B' + beta * C`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn gemm(
        &mut self,
        id: NodeId,
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
        inputs: &[Option<ValueId>],
        steps: &[Step],
        mats: &[(ValueId, AddLayout)],
        dst: BufRef,
    ) -> Result<(), LowerError> {
        let nr = self.tier.nr();
        let name = self.g.node(id).name.clone();
        let (Some(av), Some(bv)) = (inputs[0], inputs.get(1).copied().flatten()) else {
            return Err(self.unsupported(id, "a missing input"));
        };
        self.f32_only(id, av)?;
        self.f32_only(id, bv)?;
        let (as_, bs) = (self.shape(av)?, self.shape(bv)?);
        // MatMul's 1-D operands are a row (A) or a column (B); leading dims are batches, which
        // for A alone fold into M.
        let a2: Vec<usize> = if as_.len() == 1 { vec![1, as_[0]] } else { as_.clone() };
        let b2: Vec<usize> = if bs.len() == 1 { vec![bs[0], 1] } else { bs.clone() };
        let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let n = if trans_b { b2[0] } else { b2[b2.len() - 1] };
        // With batches in B: the output's batch dims, and B's matrix offsets (elements) along
        // them (0 where B broadcasts); an A that broadcasts along some of them but not all is
        // first expanded to them (`a_expand`: its matrix offsets).
        let mut batch_dims: Vec<usize> = vec![];
        let mut b_strides: Vec<isize> = vec![];
        let mut a_expand: Option<Vec<isize>> = None;
        let b_batch: usize = bb.iter().product();
        let (m, k, nb, a_stride) = if b_batch == 1 {
            if trans_a {
                (a2[1], a2[0], 1, 0)
            } else {
                (ab.iter().product::<usize>() * a2[a2.len() - 2], a2[a2.len() - 1], 1, 0)
            }
        } else {
            let rank = ab.len().max(bb.len());
            let pad = |d: &[usize]| -> Vec<usize> {
                std::iter::repeat_n(1, rank - d.len()).chain(d.iter().copied()).collect()
            };
            let (pa, pb) = (pad(ab), pad(bb));
            let ob: Vec<usize> = pa.iter().zip(&pb).map(|(&x, &y)| x.max(y)).collect();
            let (m, k) = (a2[a2.len() - 2], a2[a2.len() - 1]);
            b_strides = broadcast_strides(&pb, &ob).iter().map(|&s| s * (k * n) as isize).collect();
            let a_stride = if pa == ob || pa.iter().product::<usize>() == 1 {
                if pa == ob { m * k } else { 0 }
            } else {
                a_expand = Some(broadcast_strides(&pa, &ob).iter().map(|&s| s * (m * k) as isize).collect());
                m * k
            };
            batch_dims = ob;
            (m, k, batch_dims.iter().product::<usize>(), a_stride)
        };
        // Distinct packed B matrices: one per output batch when B has batches.
        let b_count = if b_batch > 1 { nb } else { 1 };
        let (mut a_ref, a_const) = match &a_expand {
            None => (self.value(av)?, self.is_konst(av)),
            Some(strides) => {
                let src = self.value(av)?;
                let scratch = self.scratch(nb * m * k * 4, &format!("{name}/expanded_a"));
                let mut dims = batch_dims.clone();
                dims.extend([m, k]);
                let mut ins = strides.clone();
                ins.extend([k as isize, 1]);
                let spec = CopySpec::new(&dims, ins, contiguous(&dims), 0, 0, 4);
                let tiles = spec.tiles();
                self.step(Arc::new(spec), tiles, &[src], &[scratch], false, &name, "ExpandA", 0);
                (scratch, false)
            }
        };
        let a = if trans_a {
            Mat { rs: 1, cs: m as isize, panel_stride: 0, batch_stride: 0, batch_mod: 0 }
        } else {
            Mat { rs: k as isize, cs: 1, panel_stride: 0, batch_stride: a_stride as isize, batch_mod: 0 }
        };
        let pn = n.div_ceil(nr);
        let panel = pn * k * nr;
        let b = Mat {
            rs: nr as isize,
            cs: 1,
            panel_stride: (k * nr) as isize,
            batch_stride: if b_count > 1 { panel as isize } else { 0 },
            batch_mod: 0,
        };
        // Output batch bi reads B's matrix at this element offset.
        let b_offset = |bi: usize| -> usize {
            let (mut rest, mut off) = (bi, 0isize);
            for (d, &st) in batch_dims.iter().zip(&b_strides).rev() {
                off += (rest % d) as isize * st;
                rest /= d;
            }
            off as usize
        };
        // bf16 (AVX512-BF16) when the weights are constant and one matrix: B packed in pairs now,
        // A (computed at run time) packed, then rounded into pair panels.
        let bf16 = self.bf16.filter(|t| *t == Bf16Tier::Avx512Bf16 && b_count == 1 && self.is_konst(bv));
        let mut b_mat = b;
        let b_ref = match self.konst(bv) {
            Some(t) if bf16.is_some() => {
                let w = t.view::<f32>().map_err(|e| self.unsupported(id, e.to_string()))?;
                let (r, m) =
                    self.pack_b_bf16(&name, n, k, nr, |kk, j| if trans_b { w[j * k + kk] } else { w[kk * n + j] });
                b_mat = m;
                r
            }
            Some(t) => {
                let w = t.view::<f32>().map_err(|e| self.unsupported(id, e.to_string()))?;
                self.pack_b(&name, b_count, n, k, nr, |bi, kk, j| {
                    let w = &w[b_offset(bi)..];
                    if trans_b { w[j * k + kk] } else { w[kk * n + j] }
                })
            }
            None => {
                let src = self.value(bv)?;
                let batches = (b_count > 1).then_some((&batch_dims[..], &b_strides[..]));
                self.pack_b_at_run_time(&name, src, batches, k, n, nr, trans_b)
            }
        };
        let out2 = [m, n];
        let mut bias_ref = None;
        let mut bias = None;
        if let Some(cv) = inputs.get(2).copied().flatten() {
            let cs = self.shape(cv)?;
            let st = broadcast_strides(&cs, &out2);
            if st[1] != 0 && st[1] != 1 {
                return Err(self.unsupported(id, "this Gemm C layout"));
            }
            let r = match self.konst(cv) {
                Some(t) if beta != 1.0 => {
                    let v: Vec<f32> = t
                        .view::<f32>()
                        .map_err(|e| self.unsupported(id, e.to_string()))?
                        .iter()
                        .map(|x| x * beta)
                        .collect();
                    self.weight_f32(&v, &format!("{name}/bias"))
                }
                _ if beta != 1.0 => {
                    // beta * C computed at run time, then added like a constant bias.
                    let src = self.value(cv)?;
                    let scaled = self.scratch((cs.iter().product::<usize>() * 4).max(4), &format!("{name}/beta_c"));
                    let e = KExpr::bin(Bin::Ir(Binary::Mul), KExpr::In(0), KExpr::Const(beta));
                    let spec = ElementwiseSpec::new(&cs, std::slice::from_ref(&cs), e);
                    let tiles = spec.tiles();
                    self.step(Arc::new(spec), tiles, &[src], &[scaled], false, &name, "ScaleC", 0);
                    scaled
                }
                _ => self.value(cv)?,
            };
            bias_ref = Some(r);
            bias = Some(Mat { rs: st[0], cs: st[1], panel_stride: 0, batch_stride: 0, batch_mod: 0 });
        }
        let (gsteps, add_vals, helpers) = self.gemm_steps(steps, mats);
        let add_refs = add_vals.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
        let mr = self.tier.panel_rows(m);
        let mut a = Mat { panel_stride: if trans_a { mr as isize } else { (mr * k) as isize }, ..a };
        // A computed at run time is packed into mr-row panels first (read in place, a tile's rows
        // are k floats apart and, for k a multiple of 1024, all land in one L1 set); the AVX2
        // microkernel reads nothing but packed panels.
        if (mr > 1 && !a_const) || self.tier.is_wide() {
            let a_batches = if a.batch_stride == 0 { 1 } else { nb };
            (a_ref, a) = self.pack_a_at_run_time(&name, a_ref, a, a_batches, m, k, mr);
            if bf16.is_some() {
                (a_ref, a) = self.pair_panels(&name, a_ref, a, a_batches * m.div_ceil(mr), k, mr);
            }
        }
        let spec = GemmSpec {
            m,
            n,
            k,
            batch: nb,
            a,
            b: b_mat,
            c: Mat::row_major(n, m * n),
            alpha,
            bias,
            steps: gsteps,
            mr,
            bf16,
            b_pairs: bf16.is_some(),
            ..self.gemm_blocking()
        };
        let spec = balanced(spec);
        let flops = spec.flops();
        let tiles = spec.tiles();
        let mut ops = vec![a_ref, b_ref, dst];
        ops.extend(bias_ref);
        ops.extend(add_refs.iter().copied());
        let spec = Arc::new(spec);
        self.step_ordered(spec.clone(), tiles, &ops, 2, helpers, &name, self.g.node(id).op.name(), flops);
        self.attach_microkernels(&spec);
        self.gemm_in_place(&spec, &add_refs, dst);
        Ok(())
    }

    /// f64 MatMul: scalar loops with the reference's order of operations (see `F64MatMulSpec`).
    pub(super) fn matmul_f64(&mut self, id: NodeId) -> Result<(), LowerError> {
        let name = self.g.node(id).name.clone();
        let (Some(av), Some(bv)) = (self.in_val(id, 0), self.in_val(id, 1)) else {
            return Err(self.unsupported(id, "a missing input"));
        };
        let (as_, bs) = (self.shape(av)?, self.shape(bv)?);
        // 1-D operands are a row (A) or a column (B).
        let a2: Vec<usize> = if as_.len() == 1 { vec![1, as_[0]] } else { as_.clone() };
        let b2: Vec<usize> = if bs.len() == 1 { vec![bs[0], 1] } else { bs.clone() };
        let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
        let (ab, bb) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
        let batch = incept_ir::ops::binary::broadcast_dims(ab, bb).map_err(|e| self.unsupported(id, e.to_string()))?;
        let scaled = |st: Vec<isize>, size: usize| st.into_iter().map(|s| s * size as isize).collect::<Vec<_>>();
        let spec = F64MatMulSpec {
            m,
            k,
            n,
            a_strides: scaled(broadcast_strides(ab, &batch), m * k),
            b_strides: scaled(broadcast_strides(bb, &batch), k * n),
            batch,
        };
        let (a, b) = (self.value(av)?, self.value(bv)?);
        let dst = self.define(ValueId::new(id, 0))?;
        let tiles = spec.tiles();
        let flops = 2 * (tiles * n * k) as u64;
        self.step(Arc::new(spec), tiles, &[a, b], &[dst], false, &name, "MatMul", flops);
        Ok(())
    }
}
