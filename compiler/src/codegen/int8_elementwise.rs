//! QLinearAdd and QLinearMul on AVX-512: sixteen bytes at a time, in the reference's own f32
//! arithmetic (`incept_ir::ops::qlinear::QLinearBinary::value`).
//!
//! Add: `x ra + (y rb + fixed)` as two fused multiply-adds (or `y rb + (x ra + fixed)` where
//! the reference swaps the operands' places); Mul: `f32((x - za)(y - zb)) m + zc`, a multiply
//! and an add, each rounded as the scalar code rounds them. Then the reference's saturation:
//! clamp to the type's bounds (NaN to the low one), round half to even, keep the byte. The
//! same operations in the same order on the same f32 values give the same bits.
//!
//! Broadcasting: the output is a set of rows of `inner` contiguous elements over which each
//! operand is either contiguous too or one value (a per-channel constant over an NCHW map);
//! the outer dims are walked per tile as any broadcast is.

use cranelift_codegen::ir::Value;
use iced_x86::code_asm::*;

use super::CodegenError;
use super::builder::Kb;
use super::int8_arith::{BinaryConsts, qbinary};
pub use super::int8_layout::QBinaryOp;
use super::wide::{ZMM, asm_err};

/// The loop of the sixteen-lane kernels: `count` elements, `vector(masked)` per sixteen, then
/// the pointers advanced by their steps; the last 1..15 once more with k1 = (1 << n) - 1 (the
/// vector loads and stores under k1 when `masked`). Clobbers rax and rcx; ends the function.
fn sixteen_at_a_time(
    mut x: CodeAssembler,
    count: AsmRegister64,
    steps: &[(AsmRegister64, i32)],
    vector: impl Fn(&mut CodeAssembler, bool) -> Result<(), CodegenError>,
) -> Result<Vec<u8>, CodegenError> {
    let (mut top, mut tail, mut done) = (x.create_label(), x.create_label(), x.create_label());
    x.cmp(count, 16).map_err(asm_err)?;
    x.jb(tail).map_err(asm_err)?;
    x.set_label(&mut top).map_err(asm_err)?;
    vector(&mut x, false)?;
    for &(r, step) in steps {
        x.add(r, step).map_err(asm_err)?;
    }
    x.sub(count, 16).map_err(asm_err)?;
    x.cmp(count, 16).map_err(asm_err)?;
    x.jae(top).map_err(asm_err)?;
    x.set_label(&mut tail).map_err(asm_err)?;
    x.test(count, count).map_err(asm_err)?;
    x.jz(done).map_err(asm_err)?;
    x.mov(rcx, count).map_err(asm_err)?;
    x.mov(eax, 1).map_err(asm_err)?;
    x.shl(eax, cl).map_err(asm_err)?;
    x.dec(eax).map_err(asm_err)?;
    x.kmovw(k1, eax).map_err(asm_err)?;
    vector(&mut x, true)?;
    x.set_label(&mut done).map_err(asm_err)?;
    x.vzeroupper().map_err(asm_err)?;
    x.ret().map_err(asm_err)?;
    x.assemble(0).map_err(asm_err)
}

/// Elements a tile covers at most (rows longer than this are split).
const CHUNK: usize = 8192;

/// `extern "sysv64" fn(a: *const u8, b: *const u8, y: *mut u8, n: usize, consts: *const f32)`:
/// `n` outputs from `a` and `b` (each `n` contiguous bytes, or one byte when `*_scalar`).
/// `consts`: f32 ra, rb, fixed, m, zc, low bound, high bound; then i32 za, zb.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QBinaryKernel {
    pub op: QBinaryOp,
    pub signed: bool,
    pub a_scalar: bool,
    pub b_scalar: bool,
    /// In 256-bit AVX2 code (`int8_elementwise_avx2.rs`) instead of AVX-512.
    pub avx2: bool,
}

impl QBinaryKernel {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        if self.avx2 {
            return super::int8_elementwise_avx2::assemble_binary(self.op, self.signed, self.a_scalar, self.b_scalar);
        }
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        let (ra, rb, fixed, m, zc, lo, hi, za, zb) =
            (ZMM[16], ZMM[17], ZMM[18], ZMM[19], ZMM[20], ZMM[21], ZMM[22], ZMM[23], ZMM[24]);
        // The scalar operands' values (i32), loaded once.
        let (sa, sb) = (ZMM[25], ZMM[26]);
        for (i, r) in [ra, rb, fixed, m, zc, lo, hi].into_iter().enumerate() {
            x.vbroadcastss(r, dword_ptr(r8 + 4 * i as i32)).map_err(asm_err)?;
        }
        x.vpbroadcastd(za, dword_ptr(r8 + 28)).map_err(asm_err)?;
        x.vpbroadcastd(zb, dword_ptr(r8 + 32)).map_err(asm_err)?;
        for (scalar, src, dst) in [(self.a_scalar, rdi, sa), (self.b_scalar, rsi, sb)] {
            if scalar {
                if self.signed {
                    x.movsx(eax, byte_ptr(src)).map_err(asm_err)?;
                } else {
                    x.movzx(eax, byte_ptr(src)).map_err(asm_err)?;
                }
                x.vpbroadcastd(dst, eax).map_err(asm_err)?;
            }
        }
        // One vector: `masked` loads and stores the lanes of k1 only.
        let vector = |x: &mut CodeAssembler, masked: bool| -> Result<(), CodegenError> {
            let (va, vb, t) = (ZMM[0], ZMM[1], ZMM[2]);
            for (scalar, src, held, v) in [(self.a_scalar, rdi, sa, va), (self.b_scalar, rsi, sb, vb)] {
                if scalar {
                    x.vmovdqa32(v, held).map_err(asm_err)?;
                    continue;
                }
                let dst = if masked { v.k1().z() } else { v };
                if self.signed {
                    x.vpmovsxbd(dst, xmmword_ptr(src)).map_err(asm_err)?;
                } else {
                    x.vpmovzxbd(dst, xmmword_ptr(src)).map_err(asm_err)?;
                }
            }
            let consts = BinaryConsts { ra, rb, fixed, m, zc, lo, hi, za, zb };
            qbinary(x, self.op, [va, vb, t], &consts)?;
            if masked {
                x.vpmovdb(xmmword_ptr(rdx).k1(), t).map_err(asm_err)?;
            } else {
                x.vpmovdb(xmmword_ptr(rdx), t).map_err(asm_err)?;
            }
            Ok(())
        };
        let steps: Vec<(AsmRegister64, i32)> = [(self.a_scalar, rdi), (self.b_scalar, rsi), (false, rdx)]
            .into_iter()
            .filter(|&(scalar, _)| !scalar)
            .map(|(_, r)| (r, 16))
            .collect();
        sixteen_at_a_time(x, rcx, &steps, vector)
    }
}

impl super::KernelSpec for QBinaryKernel {
    fn name(&self) -> String {
        let form = |s: bool| if s { "scalar" } else { "vector" };
        let isa = if self.avx2 { "avx2" } else { "avx512" };
        format!("int8 {:?} {} x {} {isa}", self.op, form(self.a_scalar), form(self.b_scalar))
    }
    fn emit(&self, _: &mut Kb) {
        unreachable!("the int8 binary kernel is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
    fn features(&self) -> &'static [&'static str] {
        if self.avx2 { &["avx2", "fma"] } else { &["avx512bw"] }
    }
}

/// The rows of a broadcast binary op: `outer` dims (with each operand's element strides, 0
/// where it broadcasts) of rows of `inner` elements, over which A and B are contiguous or one
/// value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QBinaryRows {
    pub outer: Vec<usize>,
    pub a_strides: Vec<isize>,
    pub b_strides: Vec<isize>,
    pub inner: usize,
    pub a_scalar: bool,
    pub b_scalar: bool,
}

impl QBinaryRows {
    /// The longest rows for an output of `dims` and the operands' element strides over them
    /// (0 where broadcast), or None if they are shorter than one vector.
    pub fn of(dims: &[usize], a: &[isize], b: &[isize]) -> Option<QBinaryRows> {
        let plain = super::kernels::nd::broadcast_strides(dims, dims);
        // Where the suffix from k is contiguous (the output's own strides) or all broadcast.
        let form = |s: &[isize], k: usize| {
            if s[k..] == plain[k..] {
                Some(false)
            } else if s[k..].iter().zip(&dims[k..]).all(|(&st, &d)| st == 0 || d == 1) {
                Some(true)
            } else {
                None
            }
        };
        let k = (0..dims.len()).find(|&k| form(a, k).is_some() && form(b, k).is_some())?;
        let inner: usize = dims[k..].iter().product();
        let (a_scalar, b_scalar) = (form(a, k)?, form(b, k)?);
        (inner >= 16 && !(a_scalar && b_scalar)).then(|| QBinaryRows {
            outer: dims[..k].to_vec(),
            a_strides: a[..k].to_vec(),
            b_strides: b[..k].to_vec(),
            inner,
            a_scalar,
            b_scalar,
        })
    }
    fn chunks(&self) -> usize {
        self.inner.div_ceil(CHUNK)
    }
    pub fn tiles(&self) -> usize {
        self.outer.iter().product::<usize>() * self.chunks()
    }
}

/// The broadcast walk around [`QBinaryKernel`]: per tile (row, chunk of up to `CHUNK`
/// elements) the operands' offsets, then one call. Operands: A, B, consts, Y, the kernel.
#[derive(Clone, Debug)]
pub struct QBinarySpec {
    pub rows: QBinaryRows,
    /// The kernel it calls (steps share a spec only when they call the same one).
    pub kernel: QBinaryKernel,
}

impl super::KernelSpec for QBinarySpec {
    fn name(&self) -> String {
        let r = &self.rows;
        format!("int8 binary rows {:?} x {} (scalar a {}, b {})", r.outer, r.inner, r.a_scalar, r.b_scalar)
    }

    fn emit(&self, kb: &mut Kb) {
        let [a, b, consts, y, kernel] = [0, 1, 2, 3, 4].map(|i| kb.operand(i));
        let r = &self.rows;
        let chunks = r.chunks() as i64;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (row, part) = kb.divmod(t, chunks);
            let offs = super::kernels::nd::emit_offsets(kb, row, &r.outer, &[&r.a_strides, &r.b_strides], &[0, 0]);
            let start = kb.muli(part, CHUNK as i64);
            let at = |kb: &mut Kb, base: Value, off: Value, scalar: bool| {
                let o = if scalar { off } else { kb.add(off, start) };
                kb.elem(base, o, 1)
            };
            let pa = at(kb, a, offs[0], r.a_scalar);
            let pb = at(kb, b, offs[1], r.b_scalar);
            let py = {
                let o = kb.muli(row, r.inner as i64);
                let o = kb.add(o, start);
                kb.elem(y, o, 1)
            };
            let n = {
                let left = kb.rsubi(r.inner as i64, start);
                kb.mini(left, CHUNK as i64)
            };
            kb.call_code(kernel, &[pa, pb, py, n, consts]);
        });
    }
}

/// QuantizeLinear (f32 to u8/i8) or DequantizeLinear (u8/i8 to f32) of `n` contiguous
/// elements sharing one scale and zero point, sixteen at a time, in the reference's arithmetic
/// (`incept_ir::ops::quant::{quantize, dequantize}`): `x / s` (a division, as the reference
/// divides), rounded half to even as an f32, plus the zero point in f32, clamped to the type's
/// bounds (NaN to the low one) and converted; or `f32(q - z) * s`.
///
/// `extern "sysv64" fn(x: *const u8, y: *mut u8, n: usize, scale: *const f32, zero: *const u8)`
/// (`zero` unread without `zero`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QuantKernel {
    pub quantize: bool,
    pub signed: bool,
    pub zero: bool,
}

impl QuantKernel {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        let (scale, zi, zf, lo, hi) = (ZMM[16], ZMM[17], ZMM[18], ZMM[19], ZMM[20]);
        x.vbroadcastss(scale, dword_ptr(rcx)).map_err(asm_err)?;
        if self.zero {
            if self.signed {
                x.movsx(eax, byte_ptr(r8)).map_err(asm_err)?;
            } else {
                x.movzx(eax, byte_ptr(r8)).map_err(asm_err)?;
            }
        } else {
            x.xor(eax, eax).map_err(asm_err)?;
        }
        x.vpbroadcastd(zi, eax).map_err(asm_err)?;
        x.vcvtdq2ps(zf, zi).map_err(asm_err)?;
        let (l, h) = if self.signed { (-128f32, 127f32) } else { (0f32, 255f32) };
        for (r, v) in [(lo, l), (hi, h)] {
            x.mov(eax, v.to_bits()).map_err(asm_err)?;
            x.vpbroadcastd(r, eax).map_err(asm_err)?;
        }
        let (in_step, out_step) = if self.quantize { (64, 16) } else { (16, 64) };
        let vector = |x: &mut CodeAssembler, masked: bool| -> Result<(), CodegenError> {
            let v = ZMM[0];
            let load = if masked { v.k1().z() } else { v };
            if self.quantize {
                x.vmovups(load, zmmword_ptr(rdi)).map_err(asm_err)?;
                x.vdivps(v, v, scale).map_err(asm_err)?;
                // Round to nearest even, as an f32 (imm 8: that mode, no precision exception).
                x.vrndscaleps(v, v, 8).map_err(asm_err)?;
                x.vaddps(v, v, zf).map_err(asm_err)?;
                // vmaxps returns its second source when either is NaN: the low bound.
                x.vmaxps(v, v, lo).map_err(asm_err)?;
                x.vminps(v, v, hi).map_err(asm_err)?;
                x.vcvtps2dq(v, v).map_err(asm_err)?;
                if masked {
                    x.vpmovdb(xmmword_ptr(rsi).k1(), v).map_err(asm_err)?;
                } else {
                    x.vpmovdb(xmmword_ptr(rsi), v).map_err(asm_err)?;
                }
            } else {
                if self.signed {
                    x.vpmovsxbd(load, xmmword_ptr(rdi)).map_err(asm_err)?;
                } else {
                    x.vpmovzxbd(load, xmmword_ptr(rdi)).map_err(asm_err)?;
                }
                x.vpsubd(v, v, zi).map_err(asm_err)?;
                x.vcvtdq2ps(v, v).map_err(asm_err)?;
                x.vmulps(v, v, scale).map_err(asm_err)?;
                if masked {
                    x.vmovups(zmmword_ptr(rsi).k1(), v).map_err(asm_err)?;
                } else {
                    x.vmovups(zmmword_ptr(rsi), v).map_err(asm_err)?;
                }
            }
            Ok(())
        };
        sixteen_at_a_time(x, rdx, &[(rdi, in_step), (rsi, out_step)], vector)
    }
}

impl super::KernelSpec for QuantKernel {
    fn name(&self) -> String {
        let what = if self.quantize { "quantize" } else { "dequantize" };
        format!("int8 {what} signed {} zero {} avx512", self.signed, self.zero)
    }
    fn emit(&self, _: &mut Kb) {
        unreachable!("the int8 quantize kernel is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

/// Q or DQ by rows around [`QuantKernel`]: `rows` rows of `inner` contiguous elements, row r
/// taking parameter `r % channels`; per tile (row, chunk of up to `CHUNK` elements) one call.
/// Operands: X, scale (f32), the zero point when the kernel reads one, Y, the kernel.
#[derive(Clone, Debug)]
pub struct QuantRowsSpec {
    pub rows: usize,
    pub inner: usize,
    pub channels: usize,
    pub kernel: QuantKernel,
}

impl QuantRowsSpec {
    fn chunks(&self) -> usize {
        self.inner.div_ceil(CHUNK)
    }
    pub fn tiles(&self) -> usize {
        self.rows * self.chunks()
    }
}

impl super::KernelSpec for QuantRowsSpec {
    fn name(&self) -> String {
        let what = if self.kernel.quantize { "quantize" } else { "dequantize" };
        format!("int8 {what} rows {} x {} ({} params)", self.rows, self.inner, self.channels)
    }

    fn emit(&self, kb: &mut Kb) {
        let zero = self.kernel.zero;
        let (x, scale) = (kb.operand(0), kb.operand(1));
        let z = if zero { kb.operand(2) } else { scale };
        let (y, kernel) = (kb.operand(2 + zero as usize), kb.operand(3 + zero as usize));
        let (in_size, out_size) = if self.kernel.quantize { (4, 1) } else { (1, 4) };
        let chunks = self.chunks() as i64;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (row, part) = kb.divmod(t, chunks);
            let start = {
                let r = kb.muli(row, self.inner as i64);
                let p = kb.muli(part, CHUNK as i64);
                kb.add(r, p)
            };
            let px = kb.elem(x, start, in_size);
            let py = kb.elem(y, start, out_size);
            let c = if self.channels == 1 { kb.iconst(0) } else { kb.divmod(row, self.channels as i64).1 };
            let ps = kb.elem(scale, c, 4);
            let pz = if zero { kb.elem(z, c, 1) } else { ps };
            let n = {
                let done = kb.muli(part, CHUNK as i64);
                let left = kb.rsubi(self.inner as i64, done);
                kb.mini(left, CHUNK as i64)
            };
            kb.call_code(kernel, &[px, py, n, ps, pz]);
        });
    }
}

/// One QLinearConcat input into its place, sixteen bytes at a time in the reference's
/// arithmetic (`quantize(x_scale * (x - x_zero), y_scale, y_zero)`: a multiply, a division,
/// round half to even as an f32, the zero point in f32, the saturation).
///
/// `extern "sysv64" fn(x: *const u8, y: *mut u8, n: usize, consts: *const f32)`; consts: f32
/// x_scale, y_scale, y_zero, low and high bound, then the input zero point (i32).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequantKernel {
    pub signed: bool,
}

impl RequantKernel {
    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        let (xs, ys, yz, lo, hi, xz) = (ZMM[16], ZMM[17], ZMM[18], ZMM[19], ZMM[20], ZMM[21]);
        for (i, r) in [xs, ys, yz, lo, hi].into_iter().enumerate() {
            x.vbroadcastss(r, dword_ptr(rcx + 4 * i as i32)).map_err(asm_err)?;
        }
        x.vpbroadcastd(xz, dword_ptr(rcx + 20)).map_err(asm_err)?;
        let vector = |x: &mut CodeAssembler, masked: bool| -> Result<(), CodegenError> {
            let v = ZMM[0];
            let load = if masked { v.k1().z() } else { v };
            if self.signed {
                x.vpmovsxbd(load, xmmword_ptr(rdi)).map_err(asm_err)?;
            } else {
                x.vpmovzxbd(load, xmmword_ptr(rdi)).map_err(asm_err)?;
            }
            x.vpsubd(v, v, xz).map_err(asm_err)?;
            x.vcvtdq2ps(v, v).map_err(asm_err)?;
            x.vmulps(v, v, xs).map_err(asm_err)?;
            x.vdivps(v, v, ys).map_err(asm_err)?;
            // Round to nearest even, as an f32 (imm 8: that mode, no precision exception).
            x.vrndscaleps(v, v, 8).map_err(asm_err)?;
            x.vaddps(v, v, yz).map_err(asm_err)?;
            // vmaxps returns its second source when either is NaN: the low bound.
            x.vmaxps(v, v, lo).map_err(asm_err)?;
            x.vminps(v, v, hi).map_err(asm_err)?;
            x.vcvtps2dq(v, v).map_err(asm_err)?;
            if masked {
                x.vpmovdb(xmmword_ptr(rsi).k1(), v).map_err(asm_err)?;
            } else {
                x.vpmovdb(xmmword_ptr(rsi), v).map_err(asm_err)?;
            }
            Ok(())
        };
        sixteen_at_a_time(x, rdx, &[(rdi, 16), (rsi, 16)], vector)
    }
}

impl super::KernelSpec for RequantKernel {
    fn name(&self) -> String {
        format!("int8 requantize signed {} avx512", self.signed)
    }
    fn emit(&self, _: &mut Kb) {
        unreachable!("the int8 requantize kernel is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
}

/// A QLinearConcat input by rows around [`RequantKernel`]: `y[o * total + offset + e] =
/// requant(x[o * chunk + e])`, per tile (row o, part of up to `CHUNK` elements) one call.
/// Operands: X, consts, Y, the kernel.
#[derive(Clone, Debug)]
pub struct RequantRowsSpec {
    pub outer: usize,
    pub chunk: usize,
    pub total: usize,
    pub offset: usize,
    pub kernel: RequantKernel,
}

impl RequantRowsSpec {
    fn parts(&self) -> usize {
        self.chunk.div_ceil(CHUNK)
    }
    pub fn tiles(&self) -> usize {
        self.outer * self.parts()
    }
}

impl super::KernelSpec for RequantRowsSpec {
    fn name(&self) -> String {
        format!("int8 requantize rows {}x{} into {} at {}", self.outer, self.chunk, self.total, self.offset)
    }

    fn emit(&self, kb: &mut Kb) {
        let [x, consts, y, kernel] = [0, 1, 2, 3].map(|i| kb.operand(i));
        let parts = self.parts() as i64;
        let (begin, end) = (kb.begin, kb.end);
        kb.for_range(begin, end, 1, |kb, t| {
            let (row, part) = kb.divmod(t, parts);
            let start = kb.muli(part, CHUNK as i64);
            let px = {
                let o = kb.muli(row, self.chunk as i64);
                let o = kb.add(o, start);
                kb.elem(x, o, 1)
            };
            let py = {
                let o = kb.muli(row, self.total as i64);
                let o = kb.add(o, start);
                let o = kb.addi(o, self.offset as i64);
                kb.elem(y, o, 1)
            };
            let n = {
                let left = kb.rsubi(self.chunk as i64, start);
                kb.mini(left, CHUNK as i64)
            };
            kb.call_code(kernel, &[px, py, n, consts]);
        });
    }
}
