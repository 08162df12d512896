//! Linear ops (Conv, ConvTranspose, Gemm, MatMul) with their fused epilogues: which epilogue
//! operands a kernel reads directly, the GEMM's blocking per tier, its microkernels, and the
//! balance of its tiles over threads. The ops themselves are in `conv.rs` and `gemm.rs`.

use incept_ir::graph::{NodeId, ValueId};
use incept_ir::ops::{Activation, Binary, Op, Step};

use super::{BufRef, LowerError, Lowerer};
use crate::codegen::Tier;
use crate::codegen::kernels::conv::DwStep;
use crate::codegen::kernels::elementwise::ElementwiseSpec;
use crate::codegen::kernels::gemm::{GemmSpec, GemmStep, Mat};
use crate::codegen::kernels::math::{Bin, KExpr, act_needs_helpers};
use crate::codegen::kernels::nd::{broadcast_strides, contiguous};

impl<'g> Lowerer<'g> {
    /// A Conv/ConvTranspose/Gemm/MatMul whose own operands are the node's first `base_inputs`
    /// inputs, followed by its epilogue's operands.
    pub(super) fn linear(
        &mut self,
        id: NodeId,
        base: &Op,
        base_inputs: usize,
        steps: &[Step],
    ) -> Result<(), LowerError> {
        let node = self.g.node(id);
        let out = ValueId::new(id, 0);
        self.f32_only(id, out)?;
        let os = self.shape(out)?;
        let name = node.name.clone();
        let inputs: Vec<Option<ValueId>> = node.inputs().to_vec();
        let own = &inputs[..base_inputs.min(inputs.len())];
        let conv = matches!(base, Op::Conv(_));
        let groups = match base {
            Op::Conv(c) => c.group,
            _ => 1,
        };
        let path = match base {
            Op::Conv(c) => Some(self.conv_path(id, c, own)?),
            _ => None,
        };
        // Epilogue operands that the kernel can read directly; otherwise the epilogue runs as a
        // separate elementwise kernel afterwards.
        let mut adds = vec![];
        let mut fusable = true;
        for s in steps {
            if let Step::Add { operand } = s {
                let v = inputs
                    .get(*operand)
                    .copied()
                    .flatten()
                    .ok_or_else(|| self.unsupported(id, "a missing epilogue operand"))?;
                let layout = match path {
                    Some(ConvPath::Depthwise | ConvPath::Winograd(_)) => self.plane_add(v, &os)?.map(AddLayout::Plane),
                    _ => self.operand_mat(v, &os, conv, groups)?.map(AddLayout::Gemm),
                };
                match layout {
                    Some(l) => adds.push((v, l)),
                    None => fusable = false,
                }
            }
        }
        // A transposed conv's output is a gather of GEMM columns, which has no epilogue of its own.
        let fusable = fusable && !matches!(base, Op::ConvTranspose(_));
        let (own_steps, after): (Vec<Step>, Vec<Step>) =
            if fusable { (steps.to_vec(), vec![]) } else { (vec![], steps.to_vec()) };
        let dst = self.define(out)?;
        match base {
            Op::Conv(c) => {
                let path = path.unwrap_or(ConvPath::Gemm);
                self.conv(id, c, path, own, &own_steps, &adds, dst)?
            }
            Op::ConvTranspose(c) => self.conv_transpose(id, c, own, dst)?,
            Op::Gemm(gm) => self.gemm(id, gm.alpha, gm.beta, gm.trans_a, gm.trans_b, own, &own_steps, &adds, dst)?,
            Op::MatMul(_) => self.gemm(id, 1.0, 1.0, false, false, own, &own_steps, &adds, dst)?,
            other => return Err(self.unsupported(id, format!("{} with an epilogue", other.name()))),
        }
        if !after.is_empty() {
            // y = epilogue(y): one more elementwise pass over the output.
            let mut expr = KExpr::In(0);
            let mut ins = vec![out];
            let mut shapes = vec![os.clone()];
            for s in &after {
                expr = match s {
                    Step::Add { operand } => {
                        let v = inputs[*operand].ok_or_else(|| self.unsupported(id, "a missing epilogue operand"))?;
                        ins.push(v);
                        shapes.push(self.shape(v)?);
                        KExpr::bin(Bin::Ir(Binary::Add), expr, KExpr::In(ins.len() - 1))
                    }
                    Step::Act(a) => KExpr::act(a.clone(), expr),
                };
            }
            let spec = ElementwiseSpec::new(&os, &shapes, expr);
            let helpers = spec.needs_helpers();
            let srcs = ins.iter().map(|&v| self.value(v)).collect::<Result<Vec<_>, _>>()?;
            self.elementwise_step(spec, &srcs, dst, helpers, &name, "Epilogue");
        }
        Ok(())
    }

    /// The layout of an epilogue operand over the (rows = channels or m, cols = spatial or n)
    /// of a linear op's output, when it can be read that way.
    fn operand_mat(&self, v: ValueId, out: &[usize], conv: bool, groups: usize) -> Result<Option<Mat>, LowerError> {
        let s = self.shape(v)?;
        let st = broadcast_strides(&s, out);
        if conv {
            // out [N, C, H, W...]: rows = channels of one group, cols = spatial (flattened).
            let (n, c) = (out[0], out[1]);
            let sp_strides = &st[2..];
            // Size-1 dims have stride 0 after broadcasting: they do not decide the layout.
            let row_major =
                sp_strides.iter().zip(contiguous(&out[2..])).zip(&out[2..]).all(|((&s, k), &d)| d == 1 || s == k);
            let cs = if sp_strides.iter().all(|&x| x == 0) {
                0
            } else if row_major {
                1
            } else {
                return Ok(None);
            };
            // GEMM batch b = image * groups + g must land on image * st[0] + g * mg * st[1]. The
            // strides come from broadcasting, where a dim of size 1 has stride 0 whatever its
            // layout (one output channel: st[1] = 0), so st[0] is not always C * st[1].
            let group_stride = (c / groups) as isize * st[1];
            let (batch_stride, batch_mod) = if n == 1 {
                (group_stride, 0)
            } else if groups == 1 {
                (st[0], 0)
            } else if st[0] == 0 {
                (group_stride, groups)
            } else if st[0] == c as isize * st[1] {
                (group_stride, 0)
            } else {
                return Ok(None);
            };
            Ok(Some(Mat { rs: st[1], cs, panel_stride: 0, batch_stride, batch_mod }))
        } else {
            let r = out.len();
            if r != 2 {
                return Ok(None);
            }
            let cs = st[1];
            if cs != 0 && cs != 1 {
                return Ok(None);
            }
            Ok(Some(Mat { rs: st[0], cs, panel_stride: 0, batch_stride: 0, batch_mod: 0 }))
        }
    }

    /// How the plane kernels (depthwise, Winograd output) can read an epilogue operand over an
    /// output [N, C, H, W]: one value per channel (`Some(true)`), or the output's own layout
    /// (`Some(false)`); anything else (per position, per image, scalar) they cannot.
    fn plane_add(&self, v: ValueId, out: &[usize]) -> Result<Option<bool>, LowerError> {
        let s = self.shape(v)?;
        let st = broadcast_strides(&s, out);
        let (n, c) = (out[0], out[1]);
        let hw: usize = out[2..].iter().product();
        // Size-1 dims have stride 0 after broadcasting: they do not decide the layout.
        let along = |d: usize, want: isize| out[d] == 1 || st[d] == want;
        let spatial_zero = (2..out.len()).all(|d| along(d, 0));
        let spatial_row_major =
            st[2..].iter().zip(contiguous(&out[2..])).zip(&out[2..]).all(|((&s, k), &d)| d == 1 || s == k);
        if spatial_zero && along(1, 1) && along(0, 0) {
            return Ok(Some(true));
        }
        if spatial_row_major && along(1, hw as isize) && along(0, (c * hw) as isize) {
            return Ok(Some(false));
        }
        let _ = n;
        Ok(None)
    }

    /// The epilogue operands of a conv as plane-kernel layouts, or None if one has no such form.
    pub(super) fn plane_adds(
        &self,
        adds: &[(ValueId, AddLayout)],
        out: &[usize],
    ) -> Result<Option<Vec<(ValueId, AddLayout)>>, LowerError> {
        let mut plane = vec![];
        for &(v, _) in adds {
            match self.plane_add(v, out)? {
                Some(per_channel) => plane.push((v, AddLayout::Plane(per_channel))),
                None => return Ok(None),
            }
        }
        Ok(Some(plane))
    }

    /// The GEMM epilogue of `steps`, its operands and whether it calls helpers. Only Gemm
    /// layouts reach the GEMM path (see `linear`).
    pub(super) fn gemm_steps(
        &self,
        steps: &[Step],
        adds: &[(ValueId, AddLayout)],
    ) -> (Vec<GemmStep>, Vec<ValueId>, bool) {
        let add = |l| match l {
            AddLayout::Gemm(m) => Some(GemmStep::Add(m)),
            AddLayout::Plane(_) => None,
        };
        epilogue(steps, adds, add, GemmStep::Act)
    }

    /// The epilogue of `steps` for the plane kernels (depthwise, Winograd output), its operands
    /// and whether it calls helpers.
    pub(super) fn plane_steps(
        &self,
        steps: &[Step],
        adds: &[(ValueId, AddLayout)],
    ) -> (Vec<DwStep>, Vec<ValueId>, bool) {
        let add = |l| match l {
            AddLayout::Plane(per_channel) => Some(DwStep::Add { per_channel }),
            AddLayout::Gemm(_) => None,
        };
        epilogue(steps, adds, add, DwStep::Act)
    }

    /// The GEMM's blocking for this tier, with every other field empty (complete with `..`).
    pub(super) fn gemm_blocking(&self) -> GemmSpec {
        match self.tier {
            Tier::F32x4 => GemmSpec::blocked(KC, M_PANELS, N_PANELS),
            // BLIS-style: a 256-deep K block keeps a 16-wide B panel (16 KB) in L1 while 16
            // six-row A panels (96 KB) stay in L2 for the 16 B panels of the tile, so each A
            // block is loaded once per 256 columns (1024^3 on one core: 41.5 -> 29 ms against
            // 4 B panels per tile).
            Tier::Avx2 => GemmSpec { tier: Tier::Avx2, ..GemmSpec::blocked(256, 16, 16) },
            // A 32-wide B panel 256 deep is 32 KB of the 48 KB L1 of recent Intel cores; 16
            // twelve-row A panels (192 KB) stay in L2 across the tile's 8 B panels (1024^3 on one
            // core: 8 x 2 panels 22.9 ms, 8 x 8 15.9, 16 x 8 15.4, 24 x 16 16.4).
            Tier::Avx512 => GemmSpec { tier: Tier::Avx512, ..GemmSpec::blocked(256, 16, 8) },
        }
    }

    /// The AVX2 GEMM just stepped calls its microkernels: their entries follow its operands.
    pub(super) fn attach_microkernels(&mut self, spec: &GemmSpec) {
        if !spec.tier.is_wide() {
            return;
        }
        debug_assert!(
            spec.a.rs == 1 && (spec.a.cs == spec.mr as isize || spec.bf16.is_some()),
            "a wide GEMM reads packed A panels"
        );
        let kernels: Vec<usize> = spec.called_kernels().into_iter().map(|k| self.kernel(k)).collect();
        if let Some(step) = self.out.steps.last_mut() {
            step.operands.extend(kernels.into_iter().map(super::LOperand::Kernel));
        }
    }

    /// A GEMM whose K fits one block computes each output tile in one pass, reading an `Add`
    /// operand only for the element it then writes: an operand laid out like C may share C's
    /// memory.
    pub(super) fn gemm_in_place(&mut self, spec: &GemmSpec, adds: &[BufRef], dst: BufRef) {
        if spec.k > spec.kc {
            return;
        }
        let mats = spec.steps.iter().filter_map(|s| match s {
            GemmStep::Add(m) => Some(*m),
            _ => None,
        });
        for (m, &r) in mats.zip(adds) {
            if m == spec.c {
                self.allow_in_place(r, dst);
            }
        }
    }
}

/// The f32x4 tier's GEMM blocking: the K block, and the row and column panels per tile.
const KC: usize = 512;
const M_PANELS: usize = 8;
const N_PANELS: usize = 16;

/// How a fused kernel reads one epilogue operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum AddLayout {
    /// Through a GEMM `Mat` over (rows, cols) of the output.
    Gemm(Mat),
    /// In a plane kernel: per channel (`true`) or in the output's own layout.
    Plane(bool),
}

/// Fewest step tiles a GEMM should have: with two threads, a GEMM of two unequal tiles (289
/// columns in tiles of 256 and 33, InceptionV3's 17x17 maps) leaves one thread idle most of the
/// time; eight keep the imbalance under one tile in eight.
const MIN_GEMM_TILES: usize = 8;

/// Shrinks a GEMM's tiles (columns first, then rows) until it has [`MIN_GEMM_TILES`] or cannot
/// be split further. Only who computes which tile changes, not any sum, so the bits are the same.
pub(super) fn balanced(mut spec: GemmSpec) -> GemmSpec {
    while spec.tiles() < MIN_GEMM_TILES && (spec.n_panels > 1 || spec.m_panels > 1) {
        if spec.n_panels > 1 {
            spec.n_panels = spec.n_panels.div_ceil(2);
        } else {
            spec.m_panels = spec.m_panels.div_ceil(2);
        }
    }
    spec
}

/// Which kernels compute a conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ConvPath {
    /// The direct depthwise kernel (group = input channels).
    Depthwise,
    /// Winograd F(2x2, 3x3) or F(4x4, 3x3) (the output tile's side): transforms around a
    /// batch of GEMMs.
    Winograd(usize),
    /// im2col (or volumetric im2col) panels and the GEMM.
    Gemm,
}

/// The fewest rows (of outputs, or of Winograd tiles) a band holds: `panels` panels of
/// columns. Narrower GEMMs lose more to their edges than the cache saves (InceptionV3's 80 ->
/// 192 channel Winograd conv on 73x73 in bands of one row of 37 tiles: 11.6 -> 14.0 ms).
pub(super) fn min_band_rows(row_len: usize, nr: usize, panels: usize) -> usize {
    (panels * nr).div_ceil(row_len.max(1))
}

/// Rows per band that cut `rows` into as many bands as `most` rows per band would, but evenly:
/// no short last band (14 rows by at most 10: 7 + 7, not 10 + 4).
pub(super) fn even_bands(rows: usize, most: usize) -> usize {
    rows.div_ceil(rows.div_ceil(most.max(1)))
}

/// A kernel's epilogue steps from the fused op's: each Add reads the next of `adds` where `add`
/// gives the kernel a form for its layout; activations pass through. Also the operands the adds
/// read, and whether any activation calls helpers.
fn epilogue<S>(
    steps: &[Step],
    adds: &[(ValueId, AddLayout)],
    add: impl Fn(AddLayout) -> Option<S>,
    act: impl Fn(Activation) -> S,
) -> (Vec<S>, Vec<ValueId>, bool) {
    let (mut out, mut vals, mut helpers) = (vec![], vec![], false);
    let mut next = adds.iter();
    for s in steps {
        match s {
            Step::Add { .. } => {
                if let Some(&(v, l)) = next.next()
                    && let Some(step) = add(l)
                {
                    out.push(step);
                    vals.push(v);
                }
            }
            Step::Act(a) => {
                helpers |= act_needs_helpers(a);
                out.push(act(a.clone()));
            }
        }
    }
    (out, vals, helpers)
}
