//! The output transform of either tile: per (image, channel) plane, the tile's own
//! `output_plane` with the bias and the epilogue.

use crate::codegen::KernelSpec;
use crate::codegen::builder::Kb;
use crate::codegen::kernels::conv::{DwStep, PlaneEpilogue};
use crate::codegen::kernels::math::act_needs_helpers;

use super::geom::{E_SKEW, OutPlane, WinoGeom};
use super::{f2, f4};

/// The output transform: `Y = A^T M A` per 2x2 tile from the 16 GEMM outputs `M[img*16 + e][m][t]`,
/// plus the bias and the epilogue, written where the tile lies inside the output. Operands: M, Y,
/// bias (if any), one per Add step (laid out like Y, or one value per channel), helpers (if
/// needed). One tile per (image, output channel) plane.
#[derive(Clone, Debug)]
pub struct WinoOutputSpec {
    pub g: WinoGeom,
    pub m: usize,
    pub bias: bool,
    pub steps: Vec<DwStep>,
    /// A band (None: the whole map): its tile rows, and whether it is the last (which holds
    /// an odd output height's single last row). M holds only the band's tiles, and the output
    /// and residual operands start at the band's first row, so bands of a size share the kernel.
    pub band: Option<(usize, bool)>,
}

impl WinoOutputSpec {
    pub fn needs_helpers(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, DwStep::Act(a) if act_needs_helpers(a)))
    }
}

impl KernelSpec for WinoOutputSpec {
    fn name(&self) -> String {
        let band =
            self.band.map(|(r, last)| format!(" band {r}{}", if last { " last" } else { "" })).unwrap_or_default();
        let kind = if self.g.tile == 4 { "winograd4" } else { "winograd" };
        format!("{kind} output m{} {}x{}{band}", self.m, self.g.oh, self.g.ow)
    }

    fn emit(&self, kb: &mut Kb) {
        let adds = self.steps.iter().filter(|s| matches!(s, DwStep::Add { .. })).count();
        let n_ops = 2 + self.bias as usize + adds;
        let ops = kb.operands(n_ops);
        let helpers = self.needs_helpers().then(|| kb.operand(n_ops));
        let g = self.g.clone();
        let (rows, last) = self.band.unwrap_or((g.th(), true));
        let (tiles, m) = ((rows * g.tw()) as i64, self.m as i64);
        let ohw = (g.oh * g.ow) as i64;
        // Byte distance between the GEMM outputs of consecutive e (skewed, see `E_SKEW`).
        let es = ((g.tile + 2) * (g.tile + 2)) as i64;
        let e_stride = m * tiles * 4 + E_SKEW as i64;
        assert!(e_stride * es <= i32::MAX as i64, "lowering checks the GEMM output fits i32 offsets");
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (img, oc) = kb.divmod(t, m);
            let mp = {
                let a = kb.muli(img, es * e_stride);
                let b = kb.muli(oc, tiles * 4);
                let o = kb.add(a, b);
                kb.add(ops[0], o)
            };
            let yp = kb.elem(ops[1], t, ohw * 4);
            let epi = PlaneEpilogue::new(kb, &ops[2..], self.bias, &self.steps, oc, t, g.oh * g.ow);
            let plane = OutPlane { mp, yp, epi, helpers, steps: &self.steps, e_stride, rows, last };
            if g.tile == 4 {
                f4::output_plane(kb, &g, &plane);
            } else {
                f2::output_plane(kb, &g, &plane);
            }
        });
    }
}
