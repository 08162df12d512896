//! 3x3 stride-1 convs by Winograd F(2x2, 3x3) or F(4x4, 3x3): the tile choice (a cost model
//! of both), the weight transform and the banded transform / GEMM / transform steps.

use std::sync::Arc;

use rayon::prelude::*;

use super::linear::{balanced, even_bands, min_band_rows};
use super::{BufRef, LowerError, Lowerer};
use crate::codegen::Tier;
use crate::codegen::kernels::conv::{DwStep, Geom};
use crate::codegen::kernels::gemm::{GemmSpec, Mat};
use crate::codegen::kernels::winograd::f2::{WinoInputSpec, transform_kernel};
use crate::codegen::kernels::winograd::f4::{self, Wino4InputSpec, WinoPadSpec};
use crate::codegen::kernels::winograd::geom::{E_SKEW, WinoGeom, WinoInput};
use crate::codegen::kernels::winograd::output::WinoOutputSpec;

impl<'g> Lowerer<'g> {
    /// A 3x3 stride-1 conv by Winograd F(2x2, 3x3) or F(4x4, 3x3) (`wg.tile`): input transform
    /// (for F(4x4, 3x3) from a zero-padded copy of the input), 16 or 36 GEMMs as one batch,
    /// output transform with bias and epilogue (see `kernels::winograd`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn winograd(
        &mut self,
        name: &str,
        src: BufRef,
        w: &[f32],
        bias: Option<BufRef>,
        wg: &WinoGeom,
        cg: usize,
        mg: usize,
        steps: Vec<DwStep>,
        adds: &[BufRef],
        helpers: bool,
        dst: BufRef,
    ) -> Result<(), LowerError> {
        let nr = self.tier.nr();
        let (n, f4) = (wg.n, wg.tile == 4);
        let es = if f4 { f4::E } else { 16 };
        // Transformed weights U[e] (mg x cg each) in MR-row panels, one GEMM batch (group) per e.
        let mr = self.tier.panel_rows(mg);
        let (a_ref, a) = if f4 {
            let u: Vec<[f32; f4::E]> =
                (0..mg * cg).into_par_iter().map(|mc| f4::transform_kernel(&w[mc * 9..][..9])).collect();
            self.pack_a(name, es, mg, cg, mr, |e, m, c| u[m * cg + c][e])
        } else {
            let u: Vec<[f32; 16]> =
                (0..mg * cg).into_par_iter().map(|mc| transform_kernel(&w[mc * 9..][..9])).collect();
            self.pack_a(name, es, mg, cg, mr, |e, m, c| u[m * cg + c][e])
        };
        // A big map is transformed, multiplied and transformed back a band of tile rows at a
        // time, through band-sized buffers that stay in cache between the three steps.
        let per_row = n * wg.tw() * es * (cg + mg) * 4;
        let band_rows = if per_row * wg.th() > self.band_bytes {
            even_bands(wg.th(), (self.band_bytes / per_row).max(min_band_rows(wg.tw(), nr, 4)))
        } else {
            wg.th()
        };
        let banded = band_rows < wg.th();
        let band_tiles = |ty0: usize| band_rows.min(wg.th() - ty0) * wg.tw();
        // F(4x4, 3x3) reads zero-padded planes. F(2x2, 3x3) checks borders itself, element by
        // element, unless they are a large share of the map: then it too reads padded planes,
        // as an input without pads (ResNet50's 256-channel convs on 14x14, 24 of 49 tiles on
        // the border: their input transforms 0.31-0.39 -> 0.15 ms, plus 0.02 ms of padding).
        let padded = f4 || wg.border_share() > WINO2_PAD_BORDER_SHARE;
        let (src, in_geom) = if padded {
            let pad = WinoPadSpec { g: wg.clone(), c: cg };
            let buf = self.scratch(pad.bytes(), &format!("{name}/winograd_padded"));
            let tiles = pad.tiles();
            self.step(Arc::new(pad), tiles, &[src], &[buf], false, name, "WinogradPad", 0);
            let (hp, wp) = f4::padded_dims(wg);
            (buf, WinoGeom { h: hp, w: wp, ph: 0, pw: 0, ..wg.clone() })
        } else {
            (src, wg.clone())
        };
        // The AVX-512 tier transforms groups of sixteen tiles in machine code (F(2x2, 3x3)).
        let wide = self.tier == Tier::Avx512 && !f4;
        // V, the transformed input (F(4x4, 3x3) transforms read the padded planes by offsets
        // into them, so its geometry stays the unpadded one).
        let v_geom = if f4 { wg.clone() } else { in_geom.clone() };
        let v_layout = |band: Option<usize>| WinoInput { g: v_geom.clone(), c: cg, nr, band_tiles: band };
        let v_bytes = v_layout(banded.then(|| band_tiles(0))).bytes();
        let v = self.scratch(v_bytes, &format!("{name}/winograd_input"));
        // The F(4x4, 3x3) output transform reads a few floats past M's end (lanes it drops).
        let m_stride = |tiles: usize| mg * tiles + E_SKEW / 4;
        let m_bytes = (n * es * m_stride(band_tiles(0)) + f4::M_OVERREAD) * 4;
        let mbuf = self.scratch(m_bytes, &format!("{name}/winograd_products"));
        for ty0 in (0..wg.th()).step_by(band_rows) {
            let tiles = band_tiles(ty0);
            let layout = v_layout(banded.then_some(tiles));
            let (input_tiles, es_bytes) = (layout.tiles(), layout.e_stride());
            if f4 {
                let input = Wino4InputSpec { v: layout };
                let table: Vec<u8> = input.table(ty0 * wg.tw()).iter().flat_map(|v| v.to_le_bytes()).collect();
                let table = self.weight(&table, &format!("{name}/winograd_tiles"));
                self.step(Arc::new(input), input_tiles, &[src, table], &[v], false, name, "WinogradInput", 0);
            } else {
                let input = WinoInputSpec { v: layout, wide };
                let table: Vec<u8> = input.table(ty0 * wg.tw()).iter().flat_map(|v| v.to_le_bytes()).collect();
                let table = self.weight(&table, &format!("{name}/winograd_tiles"));
                let kernel = wide.then(|| input.wide_kernel());
                self.step(Arc::new(input), input_tiles, &[src, table], &[v], false, name, "WinogradInput", 0);
                if let Some(k) = kernel {
                    let k = self.kernel(Arc::new(k));
                    if let Some(step) = self.out.steps.last_mut() {
                        step.operands.push(super::LOperand::Kernel(k));
                    }
                }
            }
            let spec = GemmSpec {
                m: mg,
                n: tiles,
                k: cg,
                batch: n * es,
                a,
                b: Mat {
                    rs: nr as isize,
                    cs: 1,
                    panel_stride: (cg * nr) as isize,
                    batch_stride: (es_bytes / 4) as isize,
                    batch_mod: 0,
                },
                // Skewed by a line per matrix, like V (see `WinoInput::e_stride`).
                c: Mat::row_major(tiles, m_stride(tiles)),
                mr,
                ..self.gemm_blocking()
            };
            let spec = balanced(spec);
            let (flops, tiles_g) = (spec.flops(), spec.tiles());
            let spec = Arc::new(spec);
            self.step_ordered(spec.clone(), tiles_g, &[a_ref, v, mbuf], 2, false, name, "Conv", flops);
            self.attach_microkernels(&spec);
            // The output and the residuals laid out like it start at the band's first row.
            let last = ty0 + band_rows >= wg.th();
            let band = banded.then_some((band_rows.min(wg.th() - ty0), last));
            let shift = |r: BufRef| BufRef { offset: r.offset + wg.tile * ty0 * wg.ow * 4, ..r };
            let mut ops = vec![mbuf, shift(dst)];
            ops.extend(bias);
            let plane_adds = steps.iter().filter_map(|s| match s {
                DwStep::Add { per_channel } => Some(!per_channel),
                _ => None,
            });
            ops.extend(plane_adds.zip(adds).map(|(plane, &r)| if plane { shift(r) } else { r }));
            let out = WinoOutputSpec { g: wg.clone(), m: mg, bias: bias.is_some(), steps: steps.clone(), band };
            self.step_ordered(Arc::new(out), n * mg, &ops, 1, helpers, name, "WinogradOutput", 0);
        }
        Ok(())
    }
}

/// Which Winograd tile computes a conv (2: F(2x2, 3x3), 4: F(4x4, 3x3)), or None for the
/// im2col GEMM. `choice.forced` (the test knob) overrides every choice but the conv's shape;
/// `INCEPT_WINOGRAD=0|2|4` in the environment (for measuring) overrides the cost model's pick
/// among the tiles, where Winograd pays at all; F(4x4, 3x3) is the cost model's pick only with
/// `choice.f4`.
pub(super) fn winograd_tile(
    geom: &Geom,
    groups: usize,
    cg: usize,
    mg: usize,
    n: usize,
    rank: usize,
    choice: super::WinogradChoice,
) -> Option<usize> {
    let forced = choice.forced;
    let env = std::env::var("INCEPT_WINOGRAD").ok().and_then(|v| v.parse::<usize>().ok());
    if std::env::var_os("INCEPT_NO_WINOGRAD").is_some() || env == Some(0) {
        return None;
    }
    let square3 = geom.kh == 3 && geom.kw == 3 && geom.sh == 1 && geom.sw == 1 && geom.dh == 1 && geom.dw == 1;
    if !square3 || groups != 1 || rank != 4 || cg < 8 || mg < 8 || geom.oh < 2 || geom.ow < 2 {
        return None;
    }
    let wg = |tile| WinoGeom { tile, n, h: geom.h, w: geom.w, ph: geom.ph, pw: geom.pw, oh: geom.oh, ow: geom.ow };
    // Kernels address the transformed matrices with 32-bit displacements; the widest panels
    // (32, AVX-512) bound every tier's layout.
    let fits = |tile: usize| {
        let g = wg(tile);
        let limit = i32::MAX as usize / ((tile + 2) * (tile + 2));
        g.panels(32) * cg * 32 * 4 < limit && mg * (g.tiles() + 4) * 4 < limit
    };
    if let Some(tile @ (2 | 4)) = forced {
        return fits(tile).then_some(tile);
    }
    let f2 = wg(2);
    // Few tiles (a 7x7 map has 16) and weights far beyond L2: each transformed weight, 16/9 the
    // bytes of the 3x3 ones, serves only that many columns, and the GEMMs wait on memory.
    // ResNet50's 512-channel 7x7 convs took the same time either way (4.2 ms, one thread) and
    // their Winograd weights cost 16 MB each.
    if f2.tiles() * n < 32 && 16 * cg * mg * 4 > 1 << 20 {
        return None;
    }
    if let Some(tile @ (2 | 4)) = env {
        return fits(tile).then_some(tile);
    }
    if choice.f4 && fits(4) && f4_pays(&f2, &wg(4), cg, mg) {
        return Some(4);
    }
    fits(2).then_some(2)
}

/// Whether F(4x4, 3x3) beats F(2x2, 3x3) on a conv, by a cost model of both (see `winograd_cost`).
fn f4_pays(f2: &WinoGeom, f4: &WinoGeom, cg: usize, mg: usize) -> bool {
    winograd_cost(f4, cg, mg) < winograd_cost(f2, cg, mg)
}

/// Estimated time of a Winograd conv (arbitrary units): the GEMMs' multiply-adds, their
/// transformed weights streamed from memory where they do not stay in L2, and the transforms'
/// memory traffic (the input transform writes `es` values per tile and channel, the output
/// transform reads as many per output channel).
fn winograd_cost(g: &WinoGeom, cg: usize, mg: usize) -> f64 {
    let es = ((g.tile + 2) * (g.tile + 2)) as f64;
    let tiles = (g.n * g.tiles()) as f64;
    let (cg, mg) = (cg as f64, mg as f64);
    let macs = es * tiles * cg * mg;
    let weights = es * cg * mg * 4.0;
    let streamed = if weights > (1 << 20) as f64 { weights } else { 0.0 };
    let transforms = es * tiles * (cg + mg) * 4.0;
    macs / WINO_MACS_PER_UNIT + streamed / WINO_STREAM_BYTES_PER_UNIT + transforms / WINO_TRANSFORM_BYTES_PER_UNIT
}

/// Above this share of border tiles, F(2x2, 3x3) reads a zero-padded copy of its input.
const WINO2_PAD_BORDER_SHARE: f64 = 0.25;

/// The cost model's rates (per nanosecond, one AVX-512 core of the reference machine).
const WINO_MACS_PER_UNIT: f64 = 70.0;
const WINO_STREAM_BYTES_PER_UNIT: f64 = 20.0;
const WINO_TRANSFORM_BYTES_PER_UNIT: f64 = 20.0;

#[cfg(test)]
mod tests {
    use super::*;

    fn same3x3(hw: usize) -> Geom {
        Geom { h: hw, w: hw, kh: 3, kw: 3, sh: 1, sw: 1, ph: 1, pw: 1, dh: 1, dw: 1, oh: hw, ow: hw }
    }

    /// The cost model's picks on the zoo's 3x3 conv shapes match what six-conv chains of each
    /// measured (one thread, AVX-512 VM; mins of 20 runs, ms for F(2x2, 3x3) / F(4x4, 3x3)):
    /// F(4x4, 3x3) where it was faster, F(2x2, 3x3) where it was not, nothing where neither
    /// beat the im2col GEMM.
    #[test]
    fn winograd_tile_follows_the_measurements() {
        let cases = [
            // (channels in, out, map side, the tile, measured)
            (64, 64, 56, Some(4), "8.38 / 5.15"),
            (128, 128, 28, Some(4), "7.17 / 4.05"),
            (64, 64, 28, Some(4), "2.57 / 1.34"),
            (256, 256, 28, Some(4), "15.86 / 13.05 (4 convs)"),
            (64, 96, 35, Some(4), "4.85 / 2.88"),
            (96, 96, 35, Some(4), "6.64 / 3.95"),
            (32, 64, 147, Some(4), "11.05 / 8.62 (2 convs)"),
            (80, 192, 73, Some(4), "14.35 / 9.43 (2 convs)"),
            (192, 192, 17, Some(4), "5.77 / 4.42"),
            (256, 256, 14, Some(2), "6.98 / 7.31"),
            (384, 384, 8, None, "im2col 7.06, 8.33 / 15.23"),
            (512, 512, 7, None, "ResNet50's layer 4"),
        ];
        let f4 = crate::lower::WinogradChoice { forced: None, f4: true };
        let forced4 = crate::lower::WinogradChoice { forced: Some(4), f4: false };
        for (c, m, hw, want, measured) in cases {
            let got = winograd_tile(&same3x3(hw), 1, c, m, 1, 4, f4);
            assert_eq!(got, want, "{c} -> {m} on {hw}x{hw} (measured {measured})");
            // Without f4 the model never picks F(4x4, 3x3), and keeps Winograd where it paid.
            let default = winograd_tile(&same3x3(hw), 1, c, m, 1, 4, crate::lower::WinogradChoice::default());
            assert_eq!(default, want.map(|_| 2), "{c} -> {m} on {hw}x{hw} without f4");
        }
        // The test knob overrides the model; shapes Winograd cannot take stay declined.
        assert_eq!(winograd_tile(&same3x3(7), 1, 512, 512, 1, 4, forced4), Some(4));
        let strided = Geom { sh: 2, sw: 2, oh: 14, ow: 14, ..same3x3(28) };
        assert_eq!(winograd_tile(&strided, 1, 64, 64, 1, 4, forced4), None);
    }
}
