//! Window ops on one int8 plane at a time on AVX-512: the depthwise conv (exact i32 sums
//! sixteen outputs at a time, requantised as the VNNI tile's epilogue does), QLinearAveragePool
//! (the reference's f32 sums, sixteen at a time) and MaxPool of u8/i8 (64 bytes at a time).
//!
//! A depthwise conv has one input channel per output, so there is no K to feed VPDPBUSD; each
//! tap instead widens sixteen input bytes to i32 (VPMOVZXBD), multiplies them by the tap's
//! weight (VPMULLD, exact: a byte times a weight less its zero point is at most 255 x 255) and
//! adds. Two things make every tap one load at a constant offset:
//! - The input plane is first copied to the stack as `sh x sw` phase planes (phase (py, px)
//!   holds padded rows `sh i + py` and columns `sw j + px`), the padding filled with the zero
//!   point (i8 inputs flipped to u8 by their top bit, the zero point with them). Tap (ky, kx)
//!   then reads phase `(ky dh % sh, kx dw % sw)` at row `ky dh / sh` and column `kx dw / sw`,
//!   whatever the stride.
//! - Outputs are computed on the phase planes' row pitch `wq` (flat index `oy wq + ox`), so a
//!   vector runs across output rows; the columns past `ow` are computed and dropped. Results go
//!   to a stack stage and the valid `ow` bytes of each row are copied out.
//!
//! With the padding equal to the zero point, `sum (x - zx)(w - zw)` equals `sum x (w - zw)`
//! less `zx` times the sum of `(w - zw)` everywhere, so the weights less their zero point are
//! the taps and the second term folds into the per-channel bias: the sums equal the
//! reference's, as i32 arithmetic wraps.
//!
//! The pools use the same phase planes. The average pads with the zero point, whose dequantized
//! value 0 adds nothing to the reference's f32 sum, and divides by a per-output count computed
//! at compile time (`incept_ir::ops::qlinear::span`); the max pads with the type's low end,
//! which is also the reference's result for a window of padding alone.

use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value};
use iced_x86::code_asm::*;

use super::CodegenError;
use super::builder::{Kb, rw};
pub use super::int8_layout::PlaneOp;
use super::kernels::conv::Geom;
use super::wide::{ZMM, asm_err};

/// Vectors of outputs in flight (independent accumulators).
const GROUP: usize = 4;
/// Bytes past the phase planes and the stage that the last vector may read or write.
const SLACK: usize = 128;
/// The largest stack the phase planes and the stage may take; larger planes stay scalar.
pub const MAX_STACK: usize = 160 * 1024;

/// The machine code for one plane: `vectors` vectors of outputs from the phase planes (taps at
/// byte offsets `taps`), into the stage.
///
/// `extern "sysv64" fn(phases: *const u8, stage: *mut u8, a, b, c, d)`:
/// - Conv: `a` the channel's taps (i32, weights less their zero point), `b` and `c` its bias
///   (i32) and multiplier (f32), `d` the consts as the VNNI tile's (the output bounds less the
///   zero point, f32, then the zero point, i32).
/// - Average: `a` the counts (f32, one per output on the stage's pitch), `b` the consts: f32
///   x_scale, y_scale, y_zero, low and high bound, then the padding zero point (i32).
/// - Max: none.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QDwPlaneKernel {
    pub op: PlaneOp,
    pub vectors: usize,
    pub taps: Vec<i32>,
    /// In 256-bit AVX2 code (`int8_plane_avx2.rs`), narrowing Conv and Average outputs to i8
    /// (`signed`) or u8; else AVX-512.
    pub avx2: bool,
    pub signed: bool,
}

impl QDwPlaneKernel {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        if self.avx2 {
            return super::int8_plane_avx2::assemble_plane(self.op, self.vectors, &self.taps, self.signed);
        }
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        let acc = |v: usize| ZMM[v];
        let tmp = |v: usize| ZMM[GROUP + v];
        let (c0, c1, c2, c3, c4, c5) = (ZMM[16], ZMM[17], ZMM[18], ZMM[19], ZMM[20], ZMM[21]);
        match self.op {
            PlaneOp::Conv => {
                // bias, multiplier, low, high, zero point
                x.vpbroadcastd(c0, dword_ptr(rcx)).map_err(asm_err)?;
                x.vbroadcastss(c1, dword_ptr(r8)).map_err(asm_err)?;
                x.vbroadcastss(c2, dword_ptr(r9)).map_err(asm_err)?;
                x.vbroadcastss(c3, dword_ptr(r9 + 4)).map_err(asm_err)?;
                x.vpbroadcastd(c4, dword_ptr(r9 + 8)).map_err(asm_err)?;
            }
            PlaneOp::Average => {
                // x scale, y scale, y zero, low, high, padding zero point
                for (i, r) in [c0, c1, c2, c3, c4].into_iter().enumerate() {
                    x.vbroadcastss(r, dword_ptr(rcx + 4 * i as i32)).map_err(asm_err)?;
                }
                x.vpbroadcastd(c5, dword_ptr(rcx + 20)).map_err(asm_err)?;
            }
            PlaneOp::Max { .. } => {}
        }
        let lanes = self.op.lanes() as i32;
        let body = |x: &mut CodeAssembler, n: usize| -> Result<(), CodegenError> {
            match self.op {
                PlaneOp::Conv => {
                    for (t, &off) in self.taps.iter().enumerate() {
                        for v in 0..n {
                            let at = off + 16 * v as i32;
                            // The first tap starts the sum.
                            let dst = if t == 0 { acc(v) } else { tmp(v) };
                            x.vpmovzxbd(dst, xmmword_ptr(rdi + at)).map_err(asm_err)?;
                            x.vpmulld(dst, dst, dword_bcst(rdx + 4 * t as i32)).map_err(asm_err)?;
                            if t > 0 {
                                x.vpaddd(acc(v), acc(v), tmp(v)).map_err(asm_err)?;
                            }
                        }
                    }
                    for v in 0..n {
                        let a = acc(v);
                        x.vpaddd(a, a, c0).map_err(asm_err)?;
                        super::int8_arith::requantize(x, a, [c1, c2, c3, c4])?;
                        x.vpmovdb(xmmword_ptr(rsi + 16 * v as i32), a).map_err(asm_err)?;
                    }
                }
                PlaneOp::Average => {
                    for (t, &off) in self.taps.iter().enumerate() {
                        for v in 0..n {
                            let at = off + 16 * v as i32;
                            // The reference's `sum += xs * (x - xz)`, from the first tap on.
                            let dst = if t == 0 { acc(v) } else { tmp(v) };
                            x.vpmovzxbd(dst, xmmword_ptr(rdi + at)).map_err(asm_err)?;
                            x.vpsubd(dst, dst, c5).map_err(asm_err)?;
                            x.vcvtdq2ps(dst, dst).map_err(asm_err)?;
                            x.vmulps(dst, dst, c0).map_err(asm_err)?;
                            if t > 0 {
                                x.vaddps(acc(v), acc(v), tmp(v)).map_err(asm_err)?;
                            }
                        }
                    }
                    for v in 0..n {
                        let a = acc(v);
                        // sum / count / y_scale + y_zero, then the saturation.
                        x.vdivps(a, a, zmmword_ptr(rdx + 64 * v as i32)).map_err(asm_err)?;
                        x.vdivps(a, a, c1).map_err(asm_err)?;
                        x.vaddps(a, a, c2).map_err(asm_err)?;
                        x.vmaxps(a, a, c3).map_err(asm_err)?;
                        x.vminps(a, a, c4).map_err(asm_err)?;
                        x.vcvtps2dq(a, a).map_err(asm_err)?;
                        x.vpmovdb(xmmword_ptr(rsi + 16 * v as i32), a).map_err(asm_err)?;
                    }
                }
                PlaneOp::Max { signed } => {
                    for (t, &off) in self.taps.iter().enumerate() {
                        for v in 0..n {
                            let src = zmmword_ptr(rdi + off + 64 * v as i32);
                            match (t, signed) {
                                (0, _) => x.vmovdqu8(acc(v), src),
                                (_, true) => x.vpmaxsb(acc(v), acc(v), src),
                                (_, false) => x.vpmaxub(acc(v), acc(v), src),
                            }
                            .map_err(asm_err)?;
                        }
                    }
                    for v in 0..n {
                        x.vmovdqu8(zmmword_ptr(rsi + 64 * v as i32), acc(v)).map_err(asm_err)?;
                    }
                }
            }
            Ok(())
        };
        let (full, rest) = (self.vectors / GROUP, self.vectors % GROUP);
        if full > 0 {
            let mut top = x.create_label();
            x.mov(r10, full as u64).map_err(asm_err)?;
            x.set_label(&mut top).map_err(asm_err)?;
            body(&mut x, GROUP)?;
            x.add(rdi, lanes * GROUP as i32).map_err(asm_err)?;
            x.add(rsi, lanes * GROUP as i32).map_err(asm_err)?;
            if self.op == PlaneOp::Average {
                x.add(rdx, 64 * GROUP as i32).map_err(asm_err)?;
            }
            x.dec(r10).map_err(asm_err)?;
            x.jnz(top).map_err(asm_err)?;
        }
        if rest > 0 {
            body(&mut x, rest)?;
        }
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

impl super::KernelSpec for QDwPlaneKernel {
    fn name(&self) -> String {
        let isa = if self.avx2 { if self.signed { "i8 avx2" } else { "u8 avx2" } } else { "avx512" };
        format!("int8 {:?} plane {} vectors {} taps {isa}", self.op, self.vectors, self.taps.len())
    }
    fn emit(&self, _: &mut Kb) {
        unreachable!("the int8 depthwise plane is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
    fn features(&self) -> &'static [&'static str] {
        if self.avx2 { &["avx2"] } else { &["avx512bw"] }
    }
}

/// A window op per plane: output channel oc reads input channel oc / mult (1 for the pools).
/// Per tile (image, output channel): the input plane into phase planes on the stack (by
/// [`PlaneFillKernel`] where it applies), the plane kernel into the stage, the stage's rows out
/// ([`RowsCopyKernel`]). Operands: X, then for Conv the taps (i32, [M][kh kw]), bias (i32 per
/// channel, the zero points' correction folded in), multipliers (f32 per channel) and consts,
/// for Average the counts and consts (see [`QDwPlaneKernel`]), then Y, the plane kernel, the
/// copy kernel and the fill kernel if any.
#[derive(Clone, Debug)]
pub struct QDepthwiseSpec {
    pub op: PlaneOp,
    pub n: usize,
    pub c: usize,
    pub mult: usize,
    pub g: Geom,
    /// i8 input: flip each byte's top bit (and the fill is the flipped zero point).
    pub flip: bool,
    /// The padding byte (as the kernel sees it).
    pub fill: u8,
    /// 256-bit AVX2 kernels (the fill in CLIF) instead of AVX-512 ones.
    pub avx2: bool,
    /// An i8 output (Conv, Average; the 256-bit kernels narrow by the type's packs).
    pub signed: bool,
}

impl QDepthwiseSpec {
    pub fn m(&self) -> usize {
        self.c * self.mult
    }
    pub fn tiles(&self) -> usize {
        self.n * self.m()
    }
    /// Rows and columns of a phase plane.
    fn phase_dims(&self) -> (usize, usize) {
        let g = &self.g;
        (g.oh + (g.kh - 1) * g.dh / g.sh, g.ow + (g.kw - 1) * g.dw / g.sw)
    }
    fn phase_bytes(&self) -> usize {
        let (hq, wq) = self.phase_dims();
        hq * wq
    }
    fn vectors(&self) -> usize {
        (self.g.oh * self.phase_dims().1).div_ceil(self.op.lanes())
    }
    fn stack_bytes(&self) -> (usize, usize) {
        let phases = self.g.sh * self.g.sw * self.phase_bytes() + self.phase_dims().1 + SLACK;
        (phases, self.op.lanes() * self.vectors() + SLACK)
    }
    /// Outputs on the stage's pitch (`oy wq + ox`), padded to whole vectors: for the average's
    /// counts.
    pub fn stage_outputs(&self) -> (usize, usize) {
        (self.phase_dims().1, self.op.lanes() * self.vectors())
    }
    /// Whether the stack takes this conv's planes.
    pub fn fits(&self) -> bool {
        let (a, b) = self.stack_bytes();
        a + b <= MAX_STACK
    }
    pub fn kernel(&self) -> QDwPlaneKernel {
        let g = &self.g;
        let (_, wq) = self.phase_dims();
        let taps = (0..g.kh)
            .flat_map(|ky| (0..g.kw).map(move |kx| (ky * g.dh, kx * g.dw)))
            .map(|(row, col)| {
                let phase = (row % g.sh) * g.sw + col % g.sw;
                (phase * self.phase_bytes() + (row / g.sh) * wq + col / g.sw) as i32
            })
            .collect();
        QDwPlaneKernel { op: self.op, vectors: self.vectors(), taps, avx2: self.avx2, signed: self.signed }
    }
    pub fn flops(&self) -> u64 {
        2 * (self.tiles() * self.g.oh * self.g.ow * self.g.kh * self.g.kw) as u64
    }
    /// The machine-code phase fill, for column strides 1 and 2 (others fill in CLIF).
    pub fn fill_kernel(&self) -> Option<PlaneFillKernel> {
        (self.g.sw <= 2 && !self.avx2).then(|| PlaneFillKernel { spec: self.clone() })
    }
    /// The copy of the stage's rows into the output plane.
    pub fn copy_kernel(&self) -> RowsCopyKernel {
        let (rows, len, from, to) = (self.g.oh, self.g.ow, self.phase_dims().1, self.g.ow);
        RowsCopyKernel { rows, len, from, to, avx2: self.avx2 }
    }

    /// Phase row `i` of phase (py, px) from input row `iy` of `plane` (or all fill when the row
    /// is padding).
    fn phase_rows(&self, kb: &mut Kb, plane: Value, phases: Value, py: usize, px: usize) {
        let g = &self.g;
        let (hq, wq) = self.phase_dims();
        let base = (py * g.sw + px) * self.phase_bytes();
        // Columns j whose input column sw j + px - pw lies inside the input.
        let first = |j: usize| (g.sw * j + px) as i64 - g.pw as i64;
        let lo = (0..wq).find(|&j| first(j) >= 0).unwrap_or(wq);
        let hi = (lo..wq).find(|&j| first(j) >= g.w as i64).unwrap_or(wq);
        kb.for_const(0, hq as i64, 1, |kb, i| {
            let out = {
                let o = kb.muli(i, wq as i64);
                let o = kb.addi(o, base as i64);
                kb.elem(phases, o, 1)
            };
            let iy = {
                let r = kb.muli(i, g.sh as i64);
                kb.addi(r, py as i64 - g.ph as i64)
            };
            let inside = {
                use cranelift_codegen::ir::condcodes::IntCC;
                kb.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, iy, g.h as i64)
            };
            let (copy_b, fill_b, join) = (kb.b.create_block(), kb.b.create_block(), kb.b.create_block());
            kb.b.ins().brif(inside, copy_b, &[], fill_b, &[]);
            kb.b.switch_to_block(copy_b);
            fill(kb, out, 0, lo, self.fill);
            let src = {
                let r = kb.muli(iy, g.w as i64);
                let r = kb.addi(r, first(lo));
                kb.elem(plane, r, 1)
            };
            if hi > lo {
                gather(kb, src, out, lo, hi - lo, g.sw, g.w as i64 - first(lo), self.flip);
            }
            fill(kb, out, hi, wq - hi, self.fill);
            kb.b.ins().jump(join, &[]);
            kb.b.switch_to_block(fill_b);
            fill(kb, out, 0, wq, self.fill);
            kb.b.ins().jump(join, &[]);
            kb.b.switch_to_block(join);
        });
    }
}

fn flags() -> MemFlagsData {
    rw()
}

/// Stores `len` bytes of `value` at `dst + at`.
fn fill(kb: &mut Kb, dst: Value, at: usize, len: usize, value: u8) {
    use cranelift_codegen::ir::types::{I8, I8X16};
    let b = kb.b.ins().iconst(I8, value as i64);
    let v = kb.b.ins().splat(I8X16, b);
    for o in (0..len / 16).map(|i| at + 16 * i) {
        kb.b.ins().store(flags(), v, dst, o as i32);
    }
    for o in at + len / 16 * 16..at + len {
        kb.b.ins().store(flags(), b, dst, o as i32);
    }
}

/// Writes `len` bytes at `dst + at`: every `stride`-th byte from `src` (whose row has `avail`
/// bytes from `src` on), top bits flipped if asked. Sixteen at a time where the loads stay in
/// the row (two loads and a byte shuffle for stride 2), else one by one.
#[allow(clippy::too_many_arguments)]
pub(super) fn gather(
    kb: &mut Kb,
    src: Value,
    dst: Value,
    at: usize,
    len: usize,
    stride: usize,
    avail: i64,
    flip: bool,
) {
    use cranelift_codegen::ir::types::{I8, I8X16};
    let (sb, sv) = {
        let b = kb.b.ins().iconst(I8, 0x80);
        (b, kb.b.ins().splat(I8X16, b))
    };
    let mut done = 0;
    if stride <= 2 {
        let even = {
            let mask: Vec<u8> = (0..16).map(|i| 2 * i as u8).collect();
            kb.b.func.dfg.immediates.push(cranelift_codegen::ir::ConstantData::from(&mask[..]))
        };
        while done + 16 <= len && ((done + 16) * stride) as i64 <= avail {
            let s = (done * stride) as i32;
            let mut v = kb.b.ins().load(I8X16, flags(), src, s);
            if stride == 2 {
                let w = kb.b.ins().load(I8X16, flags(), src, s + 16);
                v = kb.b.ins().shuffle(v, w, even);
            }
            if flip {
                v = kb.b.ins().bxor(v, sv);
            }
            kb.b.ins().store(flags(), v, dst, (at + done) as i32);
            done += 16;
        }
    }
    for j in done..len {
        let mut v = kb.b.ins().load(I8, flags(), src, (j * stride) as i32);
        if flip {
            v = kb.b.ins().bxor(v, sb);
        }
        kb.b.ins().store(flags(), v, dst, (at + j) as i32);
    }
}

impl super::KernelSpec for QDepthwiseSpec {
    fn name(&self) -> String {
        let g = &self.g;
        let isa = if self.avx2 { "avx2" } else { "avx512" };
        format!(
            "int8 {:?} {}x{} s{}x{} {}x{} -> {}x{} x{} {isa}",
            self.op, g.kh, g.kw, g.sh, g.sw, g.h, g.w, g.oh, g.ow, self.mult
        )
    }

    fn emit(&self, kb: &mut Kb) {
        // The operands between X and Y: the kernel's arguments.
        let args = match self.op {
            PlaneOp::Conv => 4,
            PlaneOp::Average => 2,
            PlaneOp::Max { .. } => 0,
        };
        let x = kb.operand(0);
        let params: Vec<Value> = (1..=args).map(|i| kb.operand(i)).collect();
        let (y, plane_kernel, copy_kernel) = (kb.operand(args + 1), kb.operand(args + 2), kb.operand(args + 3));
        let fill_kernel = self.fill_kernel().map(|_| kb.operand(args + 4));
        let g = self.g.clone();
        let (phase_len, stage_len) = self.stack_bytes();
        let phases = kb.stack_buffer(phase_len as u32);
        let stage = kb.stack_buffer(stage_len as u32);
        let ntaps = (g.kh * g.kw) as i64;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (img, oc) = kb.divmod(t, self.m() as i64);
            let plane = {
                let (ci, _) = kb.divmod(oc, self.mult as i64);
                let c = kb.muli(img, self.c as i64);
                let c = kb.add(c, ci);
                let o = kb.muli(c, (g.h * g.w) as i64);
                kb.elem(x, o, 1)
            };
            match fill_kernel {
                Some(f) => kb.call_code(f, &[plane, phases]),
                None => {
                    for py in 0..g.sh {
                        for px in 0..g.sw {
                            self.phase_rows(kb, plane, phases, py, px);
                        }
                    }
                }
            }
            let mut call = vec![phases, stage];
            if self.op == PlaneOp::Conv {
                let w = {
                    let o = kb.muli(oc, ntaps * 4);
                    kb.elem(params[0], o, 1)
                };
                let b = kb.elem(params[1], oc, 4);
                let m = kb.elem(params[2], oc, 4);
                call.extend([w, b, m, params[3]]);
            } else {
                call.extend(&params);
            }
            kb.call_code(plane_kernel, &call);
            let out = {
                let o = kb.muli(t, (g.oh * g.ow) as i64);
                kb.elem(y, o, 1)
            };
            kb.call_code(copy_kernel, &[stage, out]);
        });
    }
}

/// `mov rax, mask; kmovq k, rax`: the low `n` (0..=64) bits set.
fn byte_mask(x: &mut CodeAssembler, k: AsmRegisterK, n: usize) -> Result<(), CodegenError> {
    let bits = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    x.mov(rax, bits).map_err(asm_err)?;
    x.kmovq(k, rax).map_err(asm_err)
}

/// Fills the phase planes from one input plane, in machine code (column stride 1 or 2):
/// per phase row, the fill byte over the row (masked stores), then the input bytes the row
/// holds (masked loads; at stride 2 the even bytes of a 64-byte load, by VPMOVWB), top bits
/// flipped if asked. `extern "sysv64" fn(plane: *const u8, phases: *mut u8)`.
#[derive(Clone, Debug)]
pub struct PlaneFillKernel {
    pub spec: QDepthwiseSpec,
}

impl PlaneFillKernel {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let s = &self.spec;
        let g = &s.g;
        assert!(g.sw <= 2, "the machine-code fill takes column strides 1 and 2");
        let (hq, wq) = s.phase_dims();
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        shifted_prologue(&mut x, s.fill, s.flip)?;
        for py in 0..g.sh {
            for px in 0..g.sw {
                let base = ((py * g.sw + px) * s.phase_bytes()) as i32;
                let rows = Shifted { rows: hq, cols: wq, row0: py as i64 - g.ph as i64, col0: px as i64 - g.pw as i64 };
                shifted_rows(&mut x, g, &rows, base, s.flip)?;
            }
        }
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

/// A matrix of `rows` x `cols` bytes whose (i, j) is the input plane's byte at row `sh i +
/// row0`, column `sw j + col0`, or the fill outside the plane: a phase plane, or a tap's row
/// of the im2col byte matrix.
struct Shifted {
    rows: usize,
    cols: usize,
    row0: i64,
    col0: i64,
}

/// The fill byte in zmm31 and, to flip, 0x80 in zmm30.
fn shifted_prologue(x: &mut CodeAssembler, fill: u8, flip: bool) -> Result<(), CodegenError> {
    x.mov(eax, fill as u32).map_err(asm_err)?;
    x.vpbroadcastb(ZMM[31], eax).map_err(asm_err)?;
    if flip {
        x.mov(eax, 0x80u32).map_err(asm_err)?;
        x.vpbroadcastb(ZMM[30], eax).map_err(asm_err)?;
    }
    Ok(())
}

/// Writes a [`Shifted`] matrix at `rsi + base` from the plane at `rdi` (clobbers rax, rcx,
/// r10, r11, k1-k6, zmm0, zmm1): per row the fill (masked stores), then the bytes inside
/// (masked loads; at column stride 2 the even bytes of a 64-byte load, by VPMOVWB).
fn shifted_rows(x: &mut CodeAssembler, g: &Geom, m: &Shifted, base: i32, flip: bool) -> Result<(), CodegenError> {
    assert!(g.sw <= 2, "the machine-code gather takes column strides 1 and 2");
    let (fill, v, half) = (ZMM[31], ZMM[0], ymm1);
    let wq = m.cols;
    // Rows and columns whose input row / column lies inside the plane.
    let row_of = |i: usize| (g.sh * i) as i64 + m.row0;
    let col_of = |j: usize| (g.sw * j) as i64 + m.col0;
    let i_lo = (0..m.rows).find(|&i| row_of(i) >= 0).unwrap_or(m.rows);
    let i_hi = (i_lo..m.rows).find(|&i| row_of(i) >= g.h as i64).unwrap_or(m.rows);
    let lo = (0..wq).find(|&j| col_of(j) >= 0).unwrap_or(wq);
    let hi = (lo..wq).find(|&j| col_of(j) >= g.w as i64).unwrap_or(wq);
    let len = hi.saturating_sub(lo);
    // The masks, set once: k1/k2 a whole / the last chunk of a row's fill, k3/k4 of the bytes
    // loaded, k5/k6 of the bytes stored (chunks of 64 loaded bytes; 32 stored at stride 2).
    let per = if g.sw == 1 { 64 } else { 32 };
    let chunks = len.div_ceil(per);
    let last = len - per * chunks.saturating_sub(1);
    let loaded = |n: usize| if g.sw == 1 { n } else { 2 * n - 1 };
    for (k, bits) in [
        (k1, 64),
        (k2, wq - 64 * (wq.div_ceil(64) - 1)),
        (k3, loaded(per)),
        (k4, if len > 0 { loaded(last) } else { 0 }),
        (k5, per),
        (k6, last),
    ] {
        byte_mask(x, k, bits)?;
    }
    let fill_row = |x: &mut CodeAssembler, at: AsmMemoryOperand| -> Result<(), CodegenError> {
        let n = wq.div_ceil(64);
        for c in 0..n {
            let at = at + 64 * c as i32;
            x.vmovdqu8(if c + 1 == n { at.k2() } else { at.k1() }, fill).map_err(asm_err)?;
        }
        Ok(())
    };
    for i in (0..i_lo).chain(i_hi..m.rows) {
        fill_row(x, zmmword_ptr(rsi + base + (i * wq) as i32))?;
    }
    if i_hi <= i_lo {
        return Ok(());
    }
    let first = row_of(i_lo) * g.w as i64 + if len > 0 { col_of(lo) } else { 0 };
    x.mov(rax, first as u64).map_err(asm_err)?;
    x.lea(r10, ptr(rdi + rax)).map_err(asm_err)?;
    x.lea(r11, ptr(rsi + base + (i_lo * wq) as i32)).map_err(asm_err)?;
    x.mov(rcx, (i_hi - i_lo) as u64).map_err(asm_err)?;
    let mut top = x.create_label();
    x.set_label(&mut top).map_err(asm_err)?;
    if lo > 0 || hi < wq {
        fill_row(x, zmmword_ptr(r11))?;
    }
    for c in 0..chunks {
        let final_chunk = c + 1 == chunks;
        let src = zmmword_ptr(r10 + 64 * c as i32);
        x.vmovdqu8(if final_chunk { v.k4().z() } else { v.k3().z() }, src).map_err(asm_err)?;
        if g.sw == 1 {
            if flip {
                x.vpxord(v, v, ZMM[30]).map_err(asm_err)?;
            }
            let dst = zmmword_ptr(r11 + (lo + 64 * c) as i32);
            x.vmovdqu8(if final_chunk { dst.k6() } else { dst.k5() }, v).map_err(asm_err)?;
        } else {
            // The even bytes.
            x.vpmovwb(half, v).map_err(asm_err)?;
            if flip {
                x.vpxord(half, half, ymm30).map_err(asm_err)?;
            }
            let dst = ymmword_ptr(r11 + (lo + 32 * c) as i32);
            x.vmovdqu8(if final_chunk { dst.k6() } else { dst.k5() }, half).map_err(asm_err)?;
        }
    }
    x.add(r10, (g.sh * g.w) as i32).map_err(asm_err)?;
    x.add(r11, wq as i32).map_err(asm_err)?;
    x.dec(rcx).map_err(asm_err)?;
    x.jnz(top).map_err(asm_err)?;
    Ok(())
}

/// One tap's rows of the im2col byte matrix ([`super::int8::Im2colBytesSpec`]): output
/// position (oy, ox) takes the plane's byte at row `sh oy + ky dh - ph`, column `sw ox + kx dw
/// - pw`, or the fill. `extern "sysv64" fn(plane: *const u8, rows: *mut u8)`.
#[derive(Clone, Debug)]
pub struct TapRowsKernel {
    pub g: Geom,
    pub ky: usize,
    pub kx: usize,
    pub fill: u8,
}

impl TapRowsKernel {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let g = &self.g;
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        shifted_prologue(&mut x, self.fill, false)?;
        let m = Shifted {
            rows: g.oh,
            cols: g.ow,
            row0: (self.ky * g.dh) as i64 - g.ph as i64,
            col0: (self.kx * g.dw) as i64 - g.pw as i64,
        };
        shifted_rows(&mut x, g, &m, 0, false)?;
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

impl super::KernelSpec for TapRowsKernel {
    fn name(&self) -> String {
        let g = &self.g;
        format!(
            "int8 tap rows ({}, {}) of {}x{} s{}x{} p{}x{} -> {}x{} avx512bw",
            self.ky, self.kx, g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.oh, g.ow
        )
    }
    fn emit(&self, _: &mut Kb) {
        unreachable!("the tap rows are machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
    fn features(&self) -> &'static [&'static str] {
        &["avx512bw"]
    }
}

impl super::KernelSpec for PlaneFillKernel {
    fn name(&self) -> String {
        let g = &self.spec.g;
        format!("int8 phase fill {}x{} s{}x{} p{}x{} of {}x{} avx512bw", g.kh, g.kw, g.sh, g.sw, g.ph, g.pw, g.h, g.w)
    }
    fn emit(&self, _: &mut Kb) {
        unreachable!("the phase fill is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
    fn features(&self) -> &'static [&'static str] {
        &["avx512bw"]
    }
}

/// Copies `rows` rows of `len` bytes from pitch `from` to pitch `to`, by masked 64-byte moves
/// (nothing written past a row). `extern "sysv64" fn(src: *const u8, dst: *mut u8)`.
#[derive(Clone, Debug)]
pub struct RowsCopyKernel {
    pub rows: usize,
    pub len: usize,
    pub from: usize,
    pub to: usize,
    /// In 256-bit AVX2 code (`int8_plane_avx2.rs`) instead of AVX-512 masked moves.
    pub avx2: bool,
}

impl RowsCopyKernel {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        if self.avx2 {
            return super::int8_plane_avx2::assemble_rows_copy(self.rows, self.len, self.from, self.to);
        }
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        let v = ZMM[0];
        let chunks = self.len.div_ceil(64);
        // k1 the whole chunks, k2 the last one.
        byte_mask(&mut x, k1, 64)?;
        byte_mask(&mut x, k2, self.len - 64 * chunks.saturating_sub(1))?;
        if self.rows > 0 && chunks > 0 {
            let mut top = x.create_label();
            x.mov(rcx, self.rows as u64).map_err(asm_err)?;
            x.set_label(&mut top).map_err(asm_err)?;
            for c in 0..chunks {
                let last = c + 1 == chunks;
                let src = zmmword_ptr(rdi + 64 * c as i32);
                x.vmovdqu8(if last { v.k2().z() } else { v.k1().z() }, src).map_err(asm_err)?;
                let dst = zmmword_ptr(rsi + 64 * c as i32);
                x.vmovdqu8(if last { dst.k2() } else { dst.k1() }, v).map_err(asm_err)?;
            }
            x.add(rdi, self.from as i32).map_err(asm_err)?;
            x.add(rsi, self.to as i32).map_err(asm_err)?;
            x.dec(rcx).map_err(asm_err)?;
            x.jnz(top).map_err(asm_err)?;
        }
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        x.assemble(0).map_err(asm_err)
    }
}

impl super::KernelSpec for RowsCopyKernel {
    fn name(&self) -> String {
        let isa = if self.avx2 { "avx2" } else { "avx512bw" };
        format!("int8 rows copy {} x {} ({} -> {}) {isa}", self.rows, self.len, self.from, self.to)
    }
    fn emit(&self, _: &mut Kb) {
        unreachable!("the rows copy is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
    fn features(&self) -> &'static [&'static str] {
        if self.avx2 { &["avx2"] } else { &["avx512bw"] }
    }
}

#[cfg(test)]
mod tests {
    use incept_runtime::code::ExecutableCode;

    use super::RowsCopyKernel;

    /// Both rows copies (AVX2 here, AVX-512 where the CPU has it): every row length from 1 to
    /// 100 and some long ones, from a wider pitch to the row length, the bytes copied and
    /// nothing written past the rows (guards after the last one).
    #[test]
    fn rows_copies_write_the_rows_and_nothing_past_them() {
        type Copy = unsafe extern "sysv64" fn(*const u8, *mut u8);
        let mut ran = 0;
        for avx2 in [true, false] {
            let has = if avx2 {
                std::arch::is_x86_feature_detected!("avx2")
            } else {
                std::arch::is_x86_feature_detected!("avx512bw")
            };
            if !has {
                continue;
            }
            for len in (1..=100).chain([127, 128, 129, 500, 1001]) {
                for rows in [1, 3] {
                    let from = len + 7;
                    let k = RowsCopyKernel { rows, len, from, to: len, avx2 };
                    let code = k.assemble().expect("assemble");
                    let exec = ExecutableCode::new(&code).expect("map");
                    // SAFETY: the code is a function with the documented signature.
                    let f: Copy = unsafe { std::mem::transmute(exec.address(0).expect("address")) };
                    let src: Vec<u8> = (0..rows * from + 64).map(|i| (i * 7 + 3) as u8).collect();
                    let mut dst = vec![0xEEu8; rows * len + 64];
                    // SAFETY: src holds rows of `from` bytes, dst rows of `len` and 64 guards.
                    unsafe { f(src.as_ptr(), dst.as_mut_ptr()) };
                    for r in 0..rows {
                        assert_eq!(dst[r * len..(r + 1) * len], src[r * from..r * from + len], "avx2 {avx2} len {len}");
                    }
                    assert!(
                        dst[rows * len..].iter().all(|&b| b == 0xEE),
                        "avx2 {avx2} len {len}: written past the rows"
                    );
                    ran += 1;
                }
            }
        }
        assert!(ran > 0 || !std::arch::is_x86_feature_detected!("avx2"));
    }
}
