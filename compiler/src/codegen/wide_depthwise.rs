//! The AVX-512 row of a depthwise conv: sixteen outputs per zmm vector where the f32x4 kernel
//! computes four, for the interior of an output row (every tap inside the input, stride 1 or
//! 2; at stride 2 a tap's sixteen inputs are the even lanes of two loads, joined by one
//! permute).
//! The Cranelift depthwise kernel keeps the border rows and columns and calls this for the rest.
//!
//! ```text
//! extern "sysv64" fn(src: *const f32,   // rdi: the first output's first tap in the input plane
//!                    dst: *mut f32,     // rsi: the first output
//!                    w: *const f32,     // rdx: the plane's kh * kw weights
//!                    count: usize,      // rcx: outputs in the row
//!                    bias: *const f32,  // r8:  the plane's bias (when the kernel has one)
//!                    add: *const f32)   // r9:  the add operand: the channel's value, or the
//!                                       //      residual at the first output (when it has one)
//! ```
//!
//! Each output sums its taps in the kernel's (ky, kx) order from zero with fused multiply-adds,
//! then adds the bias and applies the steps in order, exactly as the f32x4 kernel does: the
//! two give the same bits. Sixty-four outputs per step (four independent accumulators), then
//! sixteen, then the last few under a lane mask (masked loads do not fault past the row).

use iced_x86::code_asm::*;

use super::wide::{Ops, WideAct, ZMM, asm_err};
use super::{CodegenError, KernelSpec};

/// A step of the row's epilogue after the bias: an add (of the channel's value, or of the
/// residual laid out like the output), or a bound as the GEMM microkernels apply it (a
/// `WideAct` other than `Add`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DwRowStep {
    Add { per_channel: bool },
    Bound(WideAct),
}

/// The machine code of one depthwise conv's interior rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WideDepthwiseRow {
    /// Byte offsets of the taps from an output's first tap, in (ky, kx) order.
    pub taps: Vec<i32>,
    /// The column stride: 1 or 2.
    pub stride: usize,
    pub bias: bool,
    /// At most one `Add` (it comes in through r9).
    pub steps: Vec<DwRowStep>,
}

/// Taps the row kernel holds in registers (zmm0..), followed by the bias and the per-channel
/// add: 5x5 kernels do not fit (they stay on the f32x4 path).
pub const MAX_TAPS: usize = 21;
/// Registers from the top: bounds (zmm23, zmm24), the stride-2 permute indices, four
/// accumulators, two scratch vectors.
const MAX_BOUNDS: usize = 2;
const BOUNDS: usize = 23;
const IDX: usize = 25;
const ACC: usize = 26;
const SCRATCH2: usize = 30;
const SCRATCH: usize = 31;

impl WideDepthwiseRow {
    /// Whether the kernel can be built: few enough taps and bounds, at most one add.
    pub fn fits(&self) -> bool {
        let bounds = self.steps.iter().filter(|s| matches!(s, DwRowStep::Bound(a) if a.bound().is_some())).count();
        let adds = self.steps.iter().filter(|s| matches!(s, DwRowStep::Add { .. })).count();
        !self.taps.is_empty()
            && self.taps.len() <= MAX_TAPS
            && bounds <= MAX_BOUNDS
            && adds <= 1
            && bounds + adds == self.steps.len()
            && (self.stride == 1 || self.stride == 2)
    }

    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        assert!(self.fits(), "a depthwise row kernel with {} taps and steps {:?}", self.taps.len(), self.steps);
        let ops = Ops { wide: true };
        let t = self.taps.len();
        let (bias_r, add_r) = (t, t + 1);
        let s2 = self.stride == 2;
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        if s2 {
            // Indices 0, 2, .., 30 (through the red zone: the kernel is a leaf) and k3 = the
            // second load's lanes but the last (an odd input no output reads, possibly past
            // the plane).
            for l in 0..16 {
                x.mov(dword_ptr(rsp - 64 + 4 * l), 2 * l).map_err(asm_err)?;
            }
            ops.load(&mut x, IDX, rsp - 64)?;
            x.mov(eax, 0x7fff).map_err(asm_err)?;
            x.kmovw(k3, eax).map_err(asm_err)?;
        }
        for i in 0..t {
            ops.broadcast(&mut x, i, rdx + 4 * i as i32)?;
        }
        let epi = DwEpilogue::load(&mut x, &ops, self.bias, &self.steps, bias_r, add_r)?;
        let plane_add = epi.plane_add();
        let epilogue = |x: &mut CodeAssembler, acc: usize, off: i32, masked: bool| {
            epi.apply(x, &ops, acc, r9 + off, masked.then_some(1))
        };
        // `n` vectors of outputs from rdi / rsi, then advance.
        let block = |x: &mut CodeAssembler, n: usize| -> Result<(), CodegenError> {
            for a in 0..n {
                ops.zero(x, ACC + a)?;
            }
            for (i, &off) in self.taps.iter().enumerate() {
                for a in 0..n {
                    if s2 {
                        let at = off + 128 * a as i32;
                        ops.load(x, SCRATCH, rdi + at)?;
                        x.vmovups(ZMM[SCRATCH2].k3().z(), zmmword_ptr(rdi + at + 64)).map_err(asm_err)?;
                        x.vpermt2ps(ZMM[SCRATCH], ZMM[IDX], ZMM[SCRATCH2]).map_err(asm_err)?;
                        x.vfmadd231ps(ZMM[ACC + a], ZMM[i], ZMM[SCRATCH]).map_err(asm_err)?;
                    } else {
                        x.vfmadd231ps(ZMM[ACC + a], ZMM[i], zmmword_ptr(rdi + off + 64 * a as i32)).map_err(asm_err)?;
                    }
                }
            }
            for a in 0..n {
                epilogue(x, ACC + a, 64 * a as i32, false)?;
                ops.store(x, rsi + 64 * a as i32, ACC + a)?;
            }
            let bytes = 64 * n as i32;
            x.add(rdi, bytes * self.stride as i32).map_err(asm_err)?;
            x.add(rsi, bytes).map_err(asm_err)?;
            if plane_add {
                x.add(r9, bytes).map_err(asm_err)?;
            }
            x.sub(rcx, 16 * n as i32).map_err(asm_err)?;
            Ok(())
        };
        let (mut four, mut one, mut one_loop, mut tail, mut done) =
            (x.create_label(), x.create_label(), x.create_label(), x.create_label(), x.create_label());
        x.cmp(rcx, 64).map_err(asm_err)?;
        x.jb(one).map_err(asm_err)?;
        x.set_label(&mut four).map_err(asm_err)?;
        block(&mut x, 4)?;
        x.cmp(rcx, 64).map_err(asm_err)?;
        x.jae(four).map_err(asm_err)?;
        x.set_label(&mut one).map_err(asm_err)?;
        x.cmp(rcx, 16).map_err(asm_err)?;
        x.jb(tail).map_err(asm_err)?;
        x.set_label(&mut one_loop).map_err(asm_err)?;
        block(&mut x, 1)?;
        x.cmp(rcx, 16).map_err(asm_err)?;
        x.jae(one_loop).map_err(asm_err)?;
        // The last 1..15 outputs: k1 = (1 << count) - 1.
        x.set_label(&mut tail).map_err(asm_err)?;
        x.test(rcx, rcx).map_err(asm_err)?;
        x.jz(done).map_err(asm_err)?;
        x.mov(eax, 1).map_err(asm_err)?;
        x.shl(eax, cl).map_err(asm_err)?;
        x.dec(eax).map_err(asm_err)?;
        x.kmovw(k1, eax).map_err(asm_err)?;
        if s2 {
            // The inputs of `count` outputs: 2 * count - 1 floats, k2 over the first 16, k3 the
            // rest.
            x.lea(rcx, qword_ptr(rcx + rcx - 1)).map_err(asm_err)?;
            x.mov(eax, 1).map_err(asm_err)?;
            x.shl(eax, cl).map_err(asm_err)?;
            x.dec(eax).map_err(asm_err)?;
            x.kmovw(k2, eax).map_err(asm_err)?;
            x.shr(eax, 16).map_err(asm_err)?;
            x.kmovw(k3, eax).map_err(asm_err)?;
        }
        ops.zero(&mut x, ACC)?;
        for (i, &off) in self.taps.iter().enumerate() {
            if s2 {
                x.vmovups(ZMM[SCRATCH].k2().z(), zmmword_ptr(rdi + off)).map_err(asm_err)?;
                x.vmovups(ZMM[SCRATCH2].k3().z(), zmmword_ptr(rdi + off + 64)).map_err(asm_err)?;
                x.vpermt2ps(ZMM[SCRATCH], ZMM[IDX], ZMM[SCRATCH2]).map_err(asm_err)?;
            } else {
                x.vmovups(ZMM[SCRATCH].k1().z(), zmmword_ptr(rdi + off)).map_err(asm_err)?;
            }
            x.vfmadd231ps(ZMM[ACC], ZMM[i], ZMM[SCRATCH]).map_err(asm_err)?;
        }
        epilogue(&mut x, ACC, 0, true)?;
        x.vmovups(zmmword_ptr(rsi).k1(), ZMM[ACC]).map_err(asm_err)?;
        x.set_label(&mut done).map_err(asm_err)?;
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

/// Register `r` under mask register k`k` (1..=7), merging.
pub(super) fn masked(r: AsmRegisterZmm, k: usize) -> AsmRegisterZmm {
    match k {
        1 => r.k1(),
        2 => r.k2(),
        3 => r.k3(),
        4 => r.k4(),
        5 => r.k5(),
        6 => r.k6(),
        7 => r.k7(),
        _ => unreachable!("mask registers are k1..k7"),
    }
}

/// The epilogue of the depthwise kernels, in registers loaded once per call: the bias (from
/// r8), a per-channel add (from r9), the bounds; then per vector of outputs the steps in order.
pub(super) struct DwEpilogue {
    bias: Option<usize>,
    add_r: usize,
    steps: Vec<DwRowStep>,
    bounds: Vec<(usize, bool)>,
}

impl DwEpilogue {
    /// Loads the bias into `bias_r` and a per-channel add into `add_r`, and splats the bounds
    /// into the registers from `BOUNDS` up.
    pub(super) fn load(
        x: &mut CodeAssembler,
        ops: &Ops,
        bias: bool,
        steps: &[DwRowStep],
        bias_r: usize,
        add_r: usize,
    ) -> Result<DwEpilogue, CodegenError> {
        if bias {
            ops.broadcast(x, bias_r, r8 + 0)?;
        }
        if steps.contains(&DwRowStep::Add { per_channel: true }) {
            ops.broadcast(x, add_r, r9 + 0)?;
        }
        let mut bounds = vec![];
        for s in steps {
            if let DwRowStep::Bound(a) = *s {
                let (bits, max) = a.bound().expect("fits: bounds only");
                let r = BOUNDS + bounds.len();
                ops.splat_bits(x, r, bits)?;
                bounds.push((r, max));
            }
        }
        Ok(DwEpilogue { bias: bias.then_some(bias_r), add_r, steps: steps.to_vec(), bounds })
    }

    /// Whether an add reads an operand laid out like the output (through r9).
    pub(super) fn plane_add(&self) -> bool {
        self.steps.contains(&DwRowStep::Add { per_channel: false })
    }

    /// The epilogue of accumulator `acc`, whose residual (if any) is at `res`; a partial vector
    /// reads it under `tail`.
    pub(super) fn apply(
        &self,
        x: &mut CodeAssembler,
        ops: &Ops,
        acc: usize,
        res: AsmMemoryOperand,
        tail: Option<usize>,
    ) -> Result<(), CodegenError> {
        if let Some(b) = self.bias {
            ops.add_reg(x, acc, b)?;
        }
        let mut b = 0;
        for s in &self.steps {
            match *s {
                DwRowStep::Add { per_channel: true } => ops.add_reg(x, acc, self.add_r)?,
                DwRowStep::Add { per_channel: false } => match tail {
                    Some(k) => {
                        x.vmovups(masked(ZMM[SCRATCH], k).z(), zmmword_ptr(res)).map_err(asm_err)?;
                        ops.add_reg(x, acc, SCRATCH)?;
                    }
                    None => ops.add_mem(x, acc, res)?,
                },
                DwRowStep::Bound(_) => {
                    let (r, max) = self.bounds[b];
                    ops.bound(x, acc, r, max)?;
                    b += 1;
                }
            }
        }
        Ok(())
    }
}

impl KernelSpec for WideDepthwiseRow {
    fn name(&self) -> String {
        format!("avx512 depthwise row {} taps s{}", self.taps.len(), self.stride)
    }

    fn emit(&self, _: &mut super::builder::Kb) {
        unreachable!("a wide depthwise row is machine code (machine_code), not CLIF")
    }

    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

/// The epilogue in plain Rust, as the depthwise kernels apply it after the taps' sum `acc`:
/// the bias, then each step (`chan` a per-channel add's value, `res` the residual's element).
/// The tests' reference.
#[cfg(test)]
pub(super) fn reference_epilogue(mut acc: f32, bias: Option<f32>, steps: &[DwRowStep], chan: f32, res: f32) -> f32 {
    if let Some(b) = bias {
        acc += b;
    }
    for s in steps {
        acc = match *s {
            DwRowStep::Add { per_channel: true } => acc + chan,
            DwRowStep::Add { per_channel: false } => acc + res,
            DwRowStep::Bound(a) => match a.bound().expect("a bound") {
                (lo, true) => {
                    let lo = f32::from_bits(lo);
                    if acc < lo { lo } else { acc }
                }
                (hi, false) => {
                    let hi = f32::from_bits(hi);
                    if hi < acc { hi } else { acc }
                }
            },
        };
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codegen::wide::host_has_avx512;
    use incept_runtime::code::ExecutableCode;

    type Row = unsafe extern "sysv64" fn(*const f32, *mut f32, *const f32, usize, *const f32, *const f32);

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = incept_ir::text::parse::SplitMix(seed);
        (0..n).map(|_| s.uniform() as f32 - 0.5).collect()
    }

    /// Every count from 1 to 150 (the 64-, 16- and masked paths and their joins), 3x3 and 1x5
    /// taps, strides 1 and 2, with and without bias, each step kind, against the same sums in plain Rust (bit
    /// for bit: the same fused multiply-adds in the same order), and nothing written past the
    /// row.
    #[test]
    fn depthwise_rows_match_plain_sums() {
        if !host_has_avx512() {
            println!("skipped: this CPU has no AVX-512");
            return;
        }
        let w_in = 200usize;
        // The rows hold every tap of 150 outputs at stride 2; the plane ends at the last row.
        let x = values(w_in * 2 + 2 * 150 + 4, 1);
        let weights = values(9, 2);
        let res = values(w_in + 64, 3);
        let shapes: [Vec<i32>; 2] = [
            (0..3).flat_map(|ky| (0..3).map(move |kx| ((ky * w_in + kx) * 4) as i32)).collect(),
            (0..5).map(|kx| kx * 4).collect(),
        ];
        let step_sets = [
            vec![],
            vec![DwRowStep::Bound(WideAct::Relu)],
            vec![
                DwRowStep::Add { per_channel: false },
                DwRowStep::Bound(WideAct::Max(0f32.to_bits())),
                DwRowStep::Bound(WideAct::Min(0.3f32.to_bits())),
            ],
            vec![DwRowStep::Bound(WideAct::Max((-0.1f32).to_bits())), DwRowStep::Add { per_channel: true }],
        ];
        for (taps, stride) in shapes.iter().flat_map(|t| [(t, 1), (t, 2)]) {
            for bias in [false, true] {
                for steps in &step_sets {
                    let k = WideDepthwiseRow { taps: taps.clone(), stride, bias, steps: steps.clone() };
                    let code = k.assemble().expect("assemble");
                    let exec = ExecutableCode::new(&code).expect("map");
                    // SAFETY: the code is a function with the documented signature.
                    let f: Row = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
                    let (b, chan) = (0.25f32, -0.125f32);
                    for count in 1..=150usize {
                        let mut y = vec![f32::NAN; count + 20];
                        let add = if steps.contains(&DwRowStep::Add { per_channel: true }) { &chan } else { &res[0] };
                        // SAFETY: the input holds every tap of `count` outputs, the output
                        // `count` floats, the residual `count` floats.
                        unsafe { f(x.as_ptr(), y.as_mut_ptr(), weights.as_ptr(), count, &b, add) };
                        for o in 0..count + 20 {
                            let want = if o >= count {
                                f32::NAN
                            } else {
                                let mut acc = 0f32;
                                for (i, &off) in taps.iter().enumerate() {
                                    acc = x[off as usize / 4 + stride * o].mul_add(weights[i], acc);
                                }
                                reference_epilogue(acc, bias.then_some(b), steps, chan, res[o])
                            };
                            let got = y[o];
                            assert!(
                                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                                "{} taps, stride {stride}, bias {bias}, steps {steps:?}, count {count}: y[{o}] = {got}, want {want}",
                                taps.len()
                            );
                        }
                    }
                }
            }
        }
    }
}
