//! The AVX-512 depthwise conv of one whole small plane (image, channel): outputs taken sixteen
//! at a time in flat order (a vector runs across output rows), each tap one masked fused
//! multiply-add at a constant offset.
//!
//! On 7x7 and 14x14 maps the row kernel ([`super::wide_depthwise`]) leaves most outputs to
//! the scalar border code (24 of 49 on a 7x7 map with a 3x3 window), and a row of 5 or 12
//! interior outputs fills a third of a vector. Here every output is in a vector: flat output q
//! = oy * ow + ox reads tap (ky, kx) at q plus a constant, provided the input is laid out with
//! the output's row pitch; the lanes whose tap falls in the padding are masked off (the masks
//! are known when the kernel is built, and a masked lane's load does not fault).
//!
//! - Stride 1 with ow == w ("same" padding): the input plane is read in place.
//! - Stride 2: the input is first split into its four phases (even / odd rows x columns) on
//!   the stack, each with the output's row pitch; tap (ky, kx) then reads one phase at a
//!   constant offset.
//!
//! Each output sums its taps in (ky, kx) order from zero, skipping the taps outside the input,
//! then adds the bias and applies the steps, as the Cranelift kernel's border and interior code
//! and the row kernel do: all of them give the same bits.
//!
//! ```text
//! extern "sysv64" fn(src: *const f32,   // rdi: the input plane
//!                    dst: *mut f32,     // rsi: the output plane
//!                    w: *const f32,     // rdx: the plane's kh * kw weights
//!                    _: usize,          // rcx: unused (the row kernel's count)
//!                    bias: *const f32,  // r8:  the plane's bias (when the kernel has one)
//!                    add: *const f32)   // r9:  the channel's add value, or the residual plane
//! ```

use iced_x86::code_asm::*;

use super::wide::{Ops, ZMM, asm_err};
use super::wide_depthwise::{DwEpilogue, DwRowStep, WideDepthwiseRow, masked};
use super::{CodegenError, KernelSpec};

/// The geometry of one plane's depthwise conv (the same stride along both dims).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WideDepthwisePlane {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    /// Top and left pads.
    pub ph: usize,
    pub pw: usize,
    pub dh: usize,
    pub dw: usize,
    pub bias: bool,
    pub steps: Vec<DwRowStep>,
}

/// Taps held in registers; more are broadcast at each use.
const HELD: usize = 20;
const BIAS: usize = 20;
const ADD: usize = 21;
/// The permute indices of the phase split (the bounds take 23 and 24).
const EVEN: usize = 22;
const ODD: usize = 25;
const ACC: usize = 26;
/// Vectors of outputs in flight (independent accumulators, mask registers k1..k4).
const GROUP: usize = 4;
const SCRATCH2: usize = 30;
const SCRATCH: usize = 31;
/// The mask register of a partial last vector.
const TAIL_K: usize = 7;
/// Most (vector, tap) pairs a kernel is unrolled over: 14x14 outputs with 3x3 taps are 117,
/// 28x28 with 3x3 441; larger planes stay with the row kernel.
const MAX_UNROLL: usize = 512;

impl WideDepthwisePlane {
    fn taps(&self) -> usize {
        self.kh * self.kw
    }
    fn vectors(&self) -> usize {
        (self.oh * self.ow).div_ceil(16)
    }

    /// Whether the plane kernel applies: stride 1 with the output as wide as the input, or
    /// stride 2 with every input column a tap reads in a phase of the output's width; an epilogue the row
    /// kernel could take; a plane small enough to unroll.
    pub fn fits(&self) -> bool {
        // Stride 2: every input column a tap reads must lie within the output's width in its
        // phase (the phases have the output's row pitch); columns no output reads are dropped.
        let phase_fits = || {
            (0..self.kw).all(|kx| {
                let rx = (kx * self.dw) as i64 - self.pw as i64;
                let b = rx.rem_euclid(2);
                let last_valid = (self.w as i64 - 1 - b).div_euclid(2);
                (self.ow as i64 - 1 + (rx - b) / 2).min(last_valid) < self.ow as i64
            })
        };
        let layout = match self.stride {
            1 => self.ow == self.w,
            2 => phase_fits(),
            _ => false,
        };
        // The same epilogue rules as the row kernel (at most one add, two bounds).
        let row = WideDepthwiseRow { taps: vec![0], stride: 1, bias: self.bias, steps: self.steps.clone() };
        layout && row.fits() && self.oh * self.ow > 0 && self.vectors() * self.taps() <= MAX_UNROLL
    }

    /// For tap (ky, kx), the byte offset from output q's element (q * 4 in the read layout)
    /// and whether lane q reads inside the input.
    fn tap(&self, ky: usize, kx: usize) -> (i32, impl Fn(usize) -> bool + '_) {
        let (ry, rx) = ((ky * self.dh) as i64 - self.ph as i64, (kx * self.dw) as i64 - self.pw as i64);
        let s = self.stride as i64;
        // The phase (a, b) and the step in it: input row s * (oy + step_y) + a.
        let (a, b) = (ry.rem_euclid(s), rx.rem_euclid(s));
        let (step_y, step_x) = ((ry - a) / s, (rx - b) / s);
        let base = if self.stride == 1 { 0 } else { self.phase_offset(a as usize, b as usize) as i64 };
        let off = base + (step_y * self.ow as i64 + step_x) * 4;
        let inside = move |q: usize| {
            let (oy, ox) = ((q / self.ow) as i64, (q % self.ow) as i64);
            let (iy, ix) = (s * (oy + step_y) + a, s * (ox + step_x) + b);
            q < self.oh * self.ow && (0..self.h as i64).contains(&iy) && (0..self.w as i64).contains(&ix)
        };
        (off as i32, inside)
    }

    /// Rows of a phase plane on the stack.
    fn phase_rows(&self) -> usize {
        self.h.div_ceil(2)
    }
    /// Byte offset of phase (a, b) from rsp.
    fn phase_offset(&self, a: usize, b: usize) -> usize {
        (2 * a + b) * self.phase_rows() * self.ow * 4
    }
    /// Stack bytes: the four phases and the two permute index vectors, a multiple of 64.
    fn frame(&self) -> usize {
        (4 * self.phase_rows() * self.ow * 4).div_ceil(64) * 64 + 128
    }

    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        assert!(self.fits(), "a depthwise plane kernel that does not fit: {self:?}");
        let ops = Ops { wide: true };
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        let kmask = |x: &mut CodeAssembler, k: usize, bits: u32| -> Result<(), CodegenError> {
            x.mov(eax, bits).map_err(asm_err)?;
            let kr = [k0, k1, k2, k3, k4, k5, k6, k7][k];
            x.kmovw(kr, eax).map_err(asm_err)
        };
        let s2 = self.stride == 2;
        let src: AsmRegister64 = if s2 { rsp } else { rdi };
        if s2 {
            let frame = self.frame() as i32;
            x.sub(rsp, frame).map_err(asm_err)?;
            let idx = frame - 128;
            for l in 0..16 {
                x.mov(dword_ptr(rsp + idx + 4 * l), 2 * l).map_err(asm_err)?;
                x.mov(dword_ptr(rsp + idx + 64 + 4 * l), 2 * l + 1).map_err(asm_err)?;
            }
            ops.load(&mut x, EVEN, rsp + idx)?;
            ops.load(&mut x, ODD, rsp + idx + 64)?;
            // Row r goes to phase (r % 2, column parity) at row r / 2: 32 inputs at a time give
            // sixteen even and sixteen odd columns.
            for r in 0..self.h {
                let (a, i) = (r % 2, r / 2);
                for c in (0..self.w).step_by(32).filter(|&c| c / 2 < self.ow) {
                    let n = (self.w - c).min(32);
                    let at = ((r * self.w + c) * 4) as i32;
                    kmask(&mut x, 1, low_bits(n.min(16)))?;
                    x.vmovups(ZMM[SCRATCH].k1().z(), zmmword_ptr(rdi + at)).map_err(asm_err)?;
                    if n > 16 {
                        kmask(&mut x, 2, low_bits(n - 16))?;
                        x.vmovups(ZMM[SCRATCH2].k2().z(), zmmword_ptr(rdi + at + 64)).map_err(asm_err)?;
                    } else {
                        ops.zero(&mut x, SCRATCH2)?;
                    }
                    x.vmovaps(ZMM[ACC], ZMM[SCRATCH]).map_err(asm_err)?;
                    x.vpermt2ps(ZMM[ACC], ZMM[EVEN], ZMM[SCRATCH2]).map_err(asm_err)?;
                    x.vpermt2ps(ZMM[SCRATCH], ZMM[ODD], ZMM[SCRATCH2]).map_err(asm_err)?;
                    let row = (i * self.ow + c / 2) * 4;
                    // Columns past the output's width are never read (see `fits`).
                    let room = self.ow - c / 2;
                    kmask(&mut x, 1, low_bits(n.div_ceil(2).min(room)))?;
                    let even = (self.phase_offset(a, 0) + row) as i32;
                    x.vmovups(zmmword_ptr(rsp + even).k1(), ZMM[ACC]).map_err(asm_err)?;
                    if n >= 2 {
                        kmask(&mut x, 2, low_bits((n / 2).min(room)))?;
                        let odd = (self.phase_offset(a, 1) + row) as i32;
                        x.vmovups(zmmword_ptr(rsp + odd).k2(), ZMM[SCRATCH]).map_err(asm_err)?;
                    }
                }
            }
        }
        let t = self.taps();
        for i in 0..t.min(HELD) {
            ops.broadcast(&mut x, i, rdx + 4 * i as i32)?;
        }
        let epi = DwEpilogue::load(&mut x, &ops, self.bias, &self.steps, BIAS, ADD)?;
        let (nvec, outputs) = (self.vectors(), self.oh * self.ow);
        let taps: Vec<(usize, usize)> = (0..self.kh).flat_map(|ky| (0..self.kw).map(move |kx| (ky, kx))).collect();
        for g0 in (0..nvec).step_by(GROUP) {
            let group = (nvec - g0).min(GROUP);
            for a in 0..group {
                ops.zero(&mut x, ACC + a)?;
            }
            for (ti, &(ky, kx)) in taps.iter().enumerate() {
                let (off, inside) = self.tap(ky, kx);
                let masks: Vec<u32> = (0..group)
                    .map(|a| (0..16).filter(|&l| inside(16 * (g0 + a) + l)).fold(0u32, |m, l| m | 1 << l))
                    .collect();
                if masks.iter().all(|&m| m == 0) {
                    continue;
                }
                let wr = if ti < HELD {
                    ti
                } else {
                    ops.broadcast(&mut x, SCRATCH, rdx + 4 * ti as i32)?;
                    SCRATCH
                };
                for (a, &m) in masks.iter().enumerate() {
                    let at = src + (off + 64 * (g0 + a) as i32);
                    match m {
                        0 => {}
                        0xffff => x.vfmadd231ps(ZMM[ACC + a], ZMM[wr], zmmword_ptr(at)).map_err(asm_err)?,
                        _ => {
                            kmask(&mut x, 1 + a, m)?;
                            x.vfmadd231ps(masked(ZMM[ACC + a], 1 + a), ZMM[wr], zmmword_ptr(at)).map_err(asm_err)?;
                        }
                    }
                }
            }
            for a in 0..group {
                let v = g0 + a;
                let left = outputs - 16 * v;
                let tail = (left < 16).then_some(TAIL_K);
                if tail.is_some() {
                    kmask(&mut x, TAIL_K, low_bits(left))?;
                }
                epi.apply(&mut x, &ops, ACC + a, r9 + 64 * v as i32, tail)?;
                let out = zmmword_ptr(rsi + 64 * v as i32);
                if tail.is_some() { x.vmovups(out.k7(), ZMM[ACC + a]) } else { x.vmovups(out, ZMM[ACC + a]) }
                    .map_err(asm_err)?;
            }
        }
        if s2 {
            x.add(rsp, self.frame() as i32).map_err(asm_err)?;
        }
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

/// The low `n` bits set (n <= 16).
fn low_bits(n: usize) -> u32 {
    (1u32 << n) - 1
}

impl KernelSpec for WideDepthwisePlane {
    fn name(&self) -> String {
        format!("avx512 depthwise plane {}x{} s{} {}x{}", self.kh, self.kw, self.stride, self.oh, self.ow)
    }

    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("a wide depthwise plane is machine code (machine_code), not CLIF")
    }

    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::wide::{WideAct, host_has_avx512};
    use crate::codegen::wide_depthwise::reference_epilogue;
    use incept_runtime::code::ExecutableCode;

    type Plane = unsafe extern "sysv64" fn(*const f32, *mut f32, *const f32, usize, *const f32, *const f32);

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = incept_ir::text::parse::SplitMix(seed);
        (0..n).map(|_| s.uniform() as f32 - 0.5).collect()
    }

    /// The plane kernel against plain sums in Rust, bit for bit (the taps inside the input in
    /// (ky, kx) order from zero with fused multiply-adds, then bias and steps): stride 1 and 2,
    /// kernels 1x3 to 7x7 (more taps than registers), dilation, asymmetric pads, every plane
    /// size from 1x1 to 16x16 and 28x28 (vectors that start mid-row, partial last vectors,
    /// groups of one to four), and nothing written past the plane.
    #[test]
    fn depthwise_planes_match_plain_sums() {
        if !host_has_avx512() {
            println!("skipped: this CPU has no AVX-512");
            return;
        }
        // (kh, kw, stride, dilation, pads top/left/bottom/right)
        let windows = [
            (3, 3, 1, 1, [1, 1, 1, 1]),
            (5, 5, 1, 1, [2, 2, 2, 2]),
            (7, 7, 1, 1, [3, 3, 3, 3]),
            (3, 3, 1, 2, [2, 2, 2, 2]),
            (1, 3, 1, 1, [0, 0, 0, 2]),
            (3, 3, 2, 1, [1, 1, 1, 1]),
            (3, 3, 2, 1, [0, 0, 1, 1]),
            (5, 5, 2, 1, [2, 2, 2, 2]),
            (2, 2, 2, 1, [0, 0, 0, 0]),
        ];
        let step_sets = [
            vec![],
            vec![DwRowStep::Add { per_channel: false }, DwRowStep::Bound(WideAct::Max(0f32.to_bits()))],
            vec![DwRowStep::Bound(WideAct::Max((-0.1f32).to_bits())), DwRowStep::Add { per_channel: true }],
            vec![DwRowStep::Bound(WideAct::Max(0f32.to_bits())), DwRowStep::Bound(WideAct::Min(0.3f32.to_bits()))],
        ];
        let sizes: Vec<(usize, usize)> = (1..=16).flat_map(|h| [(h, h), (h, 17 - h)]).chain([(28, 28)]).collect();
        let mut checked = 0;
        for &(kh, kw, s, d, p) in &windows {
            for &(h, w) in &sizes {
                let (eh, ew) = ((kh - 1) * d + 1, (kw - 1) * d + 1);
                if h + p[0] + p[2] < eh || w + p[1] + p[3] < ew {
                    continue;
                }
                let (oh, ow) = ((h + p[0] + p[2] - eh) / s + 1, (w + p[1] + p[3] - ew) / s + 1);
                for (set, steps) in step_sets.iter().enumerate() {
                    let bias = set != 1;
                    let k = WideDepthwisePlane {
                        h,
                        w,
                        oh,
                        ow,
                        kh,
                        kw,
                        stride: s,
                        ph: p[0],
                        pw: p[1],
                        dh: d,
                        dw: d,
                        bias,
                        steps: steps.clone(),
                    };
                    if !k.fits() {
                        continue;
                    }
                    let code = k.assemble().expect("assemble");
                    let exec = ExecutableCode::new(&code).expect("map");
                    // SAFETY: the code is a function with the documented signature.
                    let f: Plane = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
                    let x = values(h * w, (h * 100 + w) as u64);
                    let wt = values(kh * kw, 7);
                    let res = values(oh * ow, 9);
                    let (b, chan) = (0.25f32, -0.125f32);
                    let add = if steps.contains(&DwRowStep::Add { per_channel: true }) { &chan } else { &res[0] };
                    let mut y = vec![f32::NAN; oh * ow + 20];
                    // SAFETY: the planes hold h * w inputs, oh * ow outputs and residuals.
                    unsafe { f(x.as_ptr(), y.as_mut_ptr(), wt.as_ptr(), 0, &b, add) };
                    for o in 0..oh * ow + 20 {
                        let want = if o >= oh * ow {
                            f32::NAN
                        } else {
                            let (oy, ox) = (o / ow, o % ow);
                            let mut acc = 0f32;
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (oy * s + ky * d) as i64 - p[0] as i64;
                                    let ix = (ox * s + kx * d) as i64 - p[1] as i64;
                                    if (0..h as i64).contains(&iy) && (0..w as i64).contains(&ix) {
                                        acc = x[iy as usize * w + ix as usize].mul_add(wt[ky * kw + kx], acc);
                                    }
                                }
                            }
                            reference_epilogue(acc, bias.then_some(b), steps, chan, res[o])
                        };
                        let got = y[o];
                        assert!(
                            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                            "{kh}x{kw} s{s} d{d} pads {p:?} on {h}x{w}, steps {steps:?}: y[{o}] = {got}, want {want}"
                        );
                    }
                    checked += 1;
                }
            }
        }
        println!("{checked} plane kernels checked");
        assert!(checked > 150, "only {checked} plane kernels fit");
    }
}
