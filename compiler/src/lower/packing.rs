//! GEMM operand packing: constant weights packed once at compile time into the panels their
//! microkernel reads, and copy steps that pack operands computed at run time. A new precision
//! adds its layouts here.

use std::sync::Arc;

use rayon::prelude::*;

use super::{BufRef, Lowerer};
use crate::codegen::Tier;
use crate::codegen::bf16::{Bf16Tier, PairPanels, to_bf16};
use crate::codegen::kernels::copy::CopySpec;
use crate::codegen::kernels::gemm::Mat;
use crate::codegen::kernels::nd::contiguous;

impl<'g> Lowerer<'g> {
    /// Constant GEMM A matrices (one per group, `rows` x `k`, element `at(group, row, k)`) packed
    /// once into MR-row panels `[group][panel][k][mr]`, and the `Mat` that reads them.
    pub(super) fn pack_a(
        &mut self,
        name: &str,
        groups: usize,
        rows: usize,
        k: usize,
        mr: usize,
        at: impl Fn(usize, usize, usize) -> f32 + Sync,
    ) -> (BufRef, Mat) {
        let pm = rows.div_ceil(mr);
        let panel = k * mr;
        // Straight into the weights, one panel per task; rows past `rows` stay zero.
        let r = self.weight_f32_with(groups * pm * panel, &format!("{name}/packed_weights"), |packed| {
            fill_a_panels(packed, panel, mr, rows, k, |r, kk| kk * mr + r, at)
        });
        let mat = Mat {
            rs: 1,
            cs: mr as isize,
            panel_stride: (k * mr) as isize,
            batch_stride: (pm * k * mr) as isize,
            batch_mod: groups,
        };
        (r, mat)
    }

    /// Constant GEMM A matrices as [`pack_a`] takes them, rounded to bf16 and packed in the bf16
    /// tier's panels (`[group][panel][Bf16Tier::a_offset]`, rows and K steps past the matrix
    /// zero), and the `Mat` that reads them (in the GEMM's 4-byte units).
    pub(super) fn pack_a_bf16(
        &mut self,
        name: &str,
        groups: usize,
        rows: usize,
        k: usize,
        t: Bf16Tier,
        at: impl Fn(usize, usize, usize) -> f32 + Sync,
    ) -> (BufRef, Mat) {
        let mr = t.mr();
        let pm = rows.div_ceil(mr);
        let panel = t.a_panel_len(k);
        // The mutation the bf16 tests must catch: each pair of consecutive k swapped.
        let swap = usize::from(self.fault == Some(crate::Fault::Bf16SwappedPairs));
        let r = self.weight_u16_with(groups * pm * panel, &format!("{name}/packed_bf16_weights"), |packed| {
            fill_a_panels(
                packed,
                panel,
                mr,
                rows,
                k,
                |r, kk| t.a_offset(r, kk ^ swap),
                |gi, m, kk| to_bf16(at(gi, m, kk)),
            )
        });
        let half = |v: usize| (v / 2) as isize;
        let mat =
            Mat { rs: 1, cs: t.a_cs(), panel_stride: half(panel), batch_stride: half(pm * panel), batch_mod: groups };
        (r, mat)
    }

    /// Constant GEMM B matrices as [`pack_b`] takes them, rounded to bf16 and packed in pair
    /// panels `[batch][panel][ceil(k / 2)][nr][2]` (the layout the bf16 microkernels read B in),
    /// and the `Mat` that reads them (in the GEMM's 4-byte units).
    pub(super) fn pack_b_bf16(
        &mut self,
        name: &str,
        cols: usize,
        k: usize,
        nr: usize,
        at: impl Fn(usize, usize) -> f32 + Sync,
    ) -> (BufRef, Mat) {
        let (pn, panel) = (cols.div_ceil(nr), k.div_ceil(2) * nr * 2);
        let swap = usize::from(self.fault == Some(crate::Fault::Bf16SwappedPairs));
        let r = self.weight_u16_with(pn * panel, &format!("{name}/packed_bf16_weights"), |packed| {
            packed.par_chunks_mut(panel.max(1)).enumerate().for_each(|(j, dst)| {
                for col in j * nr..((j + 1) * nr).min(cols) {
                    for kk in 0..k {
                        let kp = kk ^ swap;
                        dst[(kp / 2) * nr * 2 + (col - j * nr) * 2 + kp % 2] = to_bf16(at(kk, col));
                    }
                }
            });
        });
        let mat =
            Mat { rs: (nr / 2) as isize, cs: 1, panel_stride: (panel / 2) as isize, batch_stride: 0, batch_mod: 0 };
        (r, mat)
    }

    /// Constant GEMM B matrices (`batches` of them, each `k` x `cols`, element
    /// `at(batch, k, col)`) packed once into `nr`-column panels `[batch][panel][k][nr]`; columns
    /// past `cols` stay zero.
    pub(super) fn pack_b(
        &mut self,
        name: &str,
        batches: usize,
        cols: usize,
        k: usize,
        nr: usize,
        at: impl Fn(usize, usize, usize) -> f32 + Sync,
    ) -> BufRef {
        let (pn, panel) = (cols.div_ceil(nr), k * nr);
        self.weight_f32_with(batches * pn * panel, &format!("{name}/packed_weights"), |packed| {
            packed.par_chunks_mut(panel.max(1)).enumerate().for_each(|(p, dst)| {
                let (bi, j) = (p / pn, p % pn);
                for col in j * nr..((j + 1) * nr).min(cols) {
                    for kk in 0..k {
                        dst[kk * nr + col - j * nr] = at(bi, kk, col);
                    }
                }
            });
        })
    }

    /// A GEMM B computed at run time (`k` x `n`, or `n` x `k` when `trans_b`) copied into whole
    /// `nr`-wide panels `[batch][panel][k][nr]` by copy steps: one set per output batch when
    /// `batches` gives the output's batch dims and B's element stride along each (0 where B
    /// broadcasts), else one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pack_b_at_run_time(
        &mut self,
        name: &str,
        src: BufRef,
        batches: Option<(&[usize], &[isize])>,
        k: usize,
        n: usize,
        nr: usize,
        trans_b: bool,
    ) -> BufRef {
        let panel = n.div_ceil(nr) * k * nr;
        let (bdims, bsi): (Vec<usize>, Vec<isize>) = match batches {
            Some((dims, strides)) => (dims.to_vec(), strides.to_vec()),
            None => (vec![1], vec![0]),
        };
        let count: usize = bdims.iter().product();
        let bso: Vec<isize> = match batches {
            Some(_) => contiguous(&bdims).iter().map(|&s| s * panel as isize).collect(),
            None => vec![0],
        };
        let scratch = self.scratch(count * panel * 4, &format!("{name}/packed_b"));
        let (ks, ns) = if trans_b { (1isize, k as isize) } else { (n as isize, 1isize) };
        let with = |lead: &[isize], rest: &[isize]| -> Vec<isize> { lead.iter().chain(rest).copied().collect() };
        // P[b][j][kk][c] = B_b(kk, j*nr + c): copy panels of full width, then the tail.
        let full = n / nr;
        if full > 0 {
            let mut dims = bdims.clone();
            dims.extend([full, k, nr]);
            let spec = CopySpec::new(
                &dims,
                with(&bsi, &[nr as isize * ns, ks, ns]),
                with(&bso, &[(k * nr) as isize, nr as isize, 1]),
                0,
                0,
                4,
            );
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[src], &[scratch], false, name, "PackB", 0);
        }
        if !n.is_multiple_of(nr) {
            let mut dims = bdims;
            dims.extend([k, n % nr]);
            let spec = CopySpec::new(
                &dims,
                with(&bsi, &[ks, ns]),
                with(&bso, &[nr as isize, 1]),
                (full * nr) as isize * ns,
                (full * k * nr) as isize,
                4,
            );
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[src], &[scratch], false, name, "PackB", 0);
        }
        scratch
    }

    /// A GEMM A computed at run time, as the tier's GEMM reads it: the f32x4 GEMM reads `a` in
    /// place, the wide tiers' microkernels only packed panels (see `pack_a_at_run_time`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_time_a(
        &mut self,
        name: &str,
        a_ref: BufRef,
        a: Mat,
        batches: usize,
        m: usize,
        k: usize,
        mr: usize,
    ) -> (BufRef, Mat) {
        match self.tier {
            Tier::F32x4 => (a_ref, a),
            Tier::Avx2 | Tier::Avx512 => self.pack_a_at_run_time(name, a_ref, a, batches, m, k, mr),
        }
    }

    /// Packed f32 A panels (`panels` of `[k][mr]`, read through `a`) rounded into bf16 pair
    /// panels `[panel][ceil(k / 2)][mr][2]` by a step, and the `Mat` that reads them.
    pub(super) fn pair_panels(
        &mut self,
        name: &str,
        a_ref: BufRef,
        a: Mat,
        panels: usize,
        k: usize,
        mr: usize,
    ) -> (BufRef, Mat) {
        let pairs = PairPanels { k, w: mr, panels };
        let dst = self.scratch(panels * pairs.dst_panel_bytes(), &format!("{name}/bf16_a"));
        let tiles = pairs.tiles();
        self.step(Arc::new(pairs), tiles, &[a_ref], &[dst], false, name, "PackBf16", 0);
        let half = (k.div_ceil(2) * mr) as isize;
        let per_batch = if a.panel_stride > 0 { a.batch_stride / a.panel_stride * half } else { 0 };
        let mat =
            Mat { rs: 1, cs: (mr / 2) as isize, panel_stride: half, batch_stride: per_batch, batch_mod: a.batch_mod };
        (dst, mat)
    }

    /// A GEMM A computed at run time (`batches` matrices of `m` x `k`, read through `a`) copied
    /// into `mr`-row panels `[batch][panel][k][mr]` by copy steps; the `Mat` that reads them keeps
    /// `a`'s batch modulus.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn pack_a_at_run_time(
        &mut self,
        name: &str,
        a_ref: BufRef,
        a: Mat,
        batches: usize,
        m: usize,
        k: usize,
        mr: usize,
    ) -> (BufRef, Mat) {
        let (pm, full, rem) = (m.div_ceil(mr), m / mr, m % mr);
        let per = pm * k * mr;
        let scratch = self.scratch(batches * per * 4, &format!("{name}/packed_a"));
        let (rs, cs, bs) = (a.rs, a.cs, a.batch_stride);
        if full > 0 {
            let spec = CopySpec::new(
                &[batches, full, k, mr],
                vec![bs, mr as isize * rs, cs, rs],
                vec![per as isize, (k * mr) as isize, mr as isize, 1],
                0,
                0,
                4,
            );
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[a_ref], &[scratch], false, name, "PackA", 0);
        }
        if rem > 0 {
            // The last panel's missing rows stay as the arena left them: the microkernels never
            // store those rows, so their values do not matter.
            let spec = CopySpec::new(
                &[batches, k, rem],
                vec![bs, cs, rs],
                vec![per as isize, mr as isize, 1],
                (full * mr) as isize * rs,
                (full * k * mr) as isize,
                4,
            );
            let tiles = spec.tiles();
            self.step(Arc::new(spec), tiles, &[a_ref], &[scratch], false, name, "PackA", 0);
        }
        let packed = Mat {
            rs: 1,
            cs: mr as isize,
            panel_stride: (k * mr) as isize,
            batch_stride: if batches > 1 { per as isize } else { 0 },
            batch_mod: a.batch_mod,
        };
        (scratch, packed)
    }
}

/// Fills packed A panels (`panel` values each, `mr` rows of the matrix per panel, groups of
/// `rows.div_ceil(mr)` panels), one panel per task: row r of a panel and step k at `place(r, k)`,
/// the value of (group, row, k) from `value`; rows past `rows` stay as they are (zero).
fn fill_a_panels<T: Send>(
    packed: &mut [T],
    panel: usize,
    mr: usize,
    rows: usize,
    k: usize,
    place: impl Fn(usize, usize) -> usize + Sync,
    value: impl Fn(usize, usize, usize) -> T + Sync,
) {
    let pm = rows.div_ceil(mr);
    packed.par_chunks_mut(panel.max(1)).enumerate().for_each(|(p, dst)| {
        let (gi, m0) = (p / pm, (p % pm) * mr);
        for m in m0..(m0 + mr).min(rows) {
            for kk in 0..k {
                dst[place(m - m0, kk)] = value(gi, m, kk);
            }
        }
    });
}
