//! Elementwise expressions on AVX-512, sixteen lanes at a time: the machine-code form of the
//! CLIF elementwise kernel's vector loop (`kernels/elementwise.rs`), which Cranelift lowers to
//! four lanes. Every operation mirrors `kernels/math.rs` in the same order (exp's range
//! reduction and series, erf's and tanh's two branches, the selects that decide NaNs and signed
//! zeros), so a lane computes what a CLIF vector lane does, bit for bit; the row's last lanes run
//! the same code under a mask (the CLIF kernel's scalar tail calls libm instead).
//!
//! Not here (the CLIF kernel keeps them): Log and Pow (lane-by-lane helper calls), Max and Min
//! (IEEE maximum/minimum: VMAXPS's NaN and signed-zero rules differ), more than four inputs.

use std::collections::HashMap;

use iced_x86::code_asm::*;
use incept_ir::ops::{Activation, Binary, Unary};

use super::CodegenError;
use super::builder::Kb;
use super::kernels::math::{Bin, KExpr};
use super::wide::{ZMM, asm_err};

/// Inputs a kernel takes (in registers, after the output and the count).
pub const MAX_INPUTS: usize = 4;

/// `out[i] = expr(in0[i], ...)` for `count` elements, inputs whose `bcast` is set read as one
/// scalar: `extern "sysv64" fn(out: *mut f32, count: usize, in0, in1, in2, in3: *const f32)`.
#[derive(Clone, Debug, PartialEq)]
pub struct WideExprKernel {
    pub expr: KExpr,
    pub bcast: Vec<bool>,
}

impl WideExprKernel {
    /// Whether the kernel computes `expr` over `inputs` inputs.
    pub fn supports(expr: &KExpr, inputs: usize) -> bool {
        fn ok(e: &KExpr) -> bool {
            match e {
                KExpr::In(_) | KExpr::Const(_) => true,
                KExpr::Act(a, x) => {
                    let act = match a {
                        Activation::Clip { .. } => true,
                        Activation::Unary(u) => !matches!(u, Unary::Log),
                    };
                    act && ok(x)
                }
                KExpr::Bin(b, l, r) => {
                    let bin = matches!(
                        b,
                        Bin::AtLeast
                            | Bin::AtMost
                            | Bin::Ir(Binary::Add | Binary::Sub | Binary::Mul | Binary::Div | Binary::PRelu)
                    );
                    bin && ok(l) && ok(r)
                }
            }
        }
        inputs <= MAX_INPUTS && ok(expr)
    }

    /// Whether the expression's values fit the registers (a dry run that keeps no constant, so
    /// at least as many temporaries as the kernel needs): else the CLIF kernel computes it.
    pub fn fits(&self) -> bool {
        self.constants().is_ok()
    }

    /// The constants the expression uses, most used first (a dry run of the emitter).
    fn constants(&self) -> Result<Vec<(u32, usize)>, CodegenError> {
        let mut scratch = CodeAssembler::new(64).map_err(asm_err)?;
        let mut e = Em::new(&mut scratch, Consts::default(), &self.bcast);
        e.count = Some(HashMap::new());
        e.expr(&self.expr)?;
        let mut seen: Vec<(u32, usize)> = e.count.take().unwrap_or_default().into_iter().collect();
        seen.sort_by_key(|&(bits, n)| (std::cmp::Reverse(n), bits));
        Ok(seen)
    }

    pub fn assemble(&self) -> Result<Vec<u8>, CodegenError> {
        assert!(Self::supports(&self.expr, self.bcast.len()), "an expression the wide kernel computes");
        let mut x = CodeAssembler::new(64).map_err(asm_err)?;
        let ins = [rdx, rcx, r8, r9];
        // Constants counted in a dry run: the eight most used kept in zmm24-31 over the row,
        // the others broadcast from a pool after the code where used.
        let seen = self.constants()?;
        let mut consts = Consts::default();
        for (i, &(bits, _)) in seen.iter().enumerate() {
            if i < KEPT {
                x.mov(eax, bits).map_err(asm_err)?;
                x.vpbroadcastd(ZMM[24 + i], eax).map_err(asm_err)?;
                consts.kept.insert(bits, 24 + i);
            } else {
                consts.pool.insert(bits, x.create_label());
            }
        }
        // Broadcast inputs: their scalar in zmm(20 + i) for the whole row.
        for (i, _) in self.bcast.iter().enumerate().filter(|(_, b)| **b) {
            x.vbroadcastss(ZMM[20 + i], dword_ptr(ins[i])).map_err(asm_err)?;
        }
        let (mut main, mut tail, mut done) = (x.create_label(), x.create_label(), x.create_label());
        x.cmp(rsi, 16).map_err(asm_err)?;
        x.jb(tail).map_err(asm_err)?;
        x.set_label(&mut main).map_err(asm_err)?;
        self.body(&mut x, &consts, false)?;
        x.add(rdi, 64).map_err(asm_err)?;
        for (i, &b) in self.bcast.iter().enumerate() {
            if !b {
                x.add(ins[i], 64).map_err(asm_err)?;
            }
        }
        x.sub(rsi, 16).map_err(asm_err)?;
        x.cmp(rsi, 16).map_err(asm_err)?;
        x.jae(main).map_err(asm_err)?;
        x.set_label(&mut tail).map_err(asm_err)?;
        x.test(rsi, rsi).map_err(asm_err)?;
        x.jz(done).map_err(asm_err)?;
        // k7: the last `count` lanes, (1 << count) - 1 (cl holds the shift: rcx saved in r11).
        x.mov(r11, rcx).map_err(asm_err)?;
        x.mov(ecx, esi).map_err(asm_err)?;
        x.mov(eax, 1u32).map_err(asm_err)?;
        x.shl(eax, cl).map_err(asm_err)?;
        x.sub(eax, 1).map_err(asm_err)?;
        x.kmovw(k7, eax).map_err(asm_err)?;
        x.mov(rcx, r11).map_err(asm_err)?;
        self.body(&mut x, &consts, true)?;
        x.set_label(&mut done).map_err(asm_err)?;
        x.vzeroupper().map_err(asm_err)?;
        x.ret().map_err(asm_err)?;
        for (&bits, label) in consts.pool.iter_mut() {
            x.set_label(label).map_err(asm_err)?;
            x.dd(&[bits]).map_err(asm_err)?;
        }
        x.assemble(0).map_err(asm_err)
    }

    /// One vector of the row: load the inputs, evaluate, store (all under k7 when `masked`).
    fn body(&self, x: &mut CodeAssembler, consts: &Consts, masked: bool) -> Result<(), CodegenError> {
        let mut e = Em::new(x, consts.clone(), &self.bcast);
        e.masked = masked;
        let v = e.expr(&self.expr)?;
        let at = zmmword_ptr(rdi);
        e.x.vmovups(if masked { at.k7() } else { at }, ZMM[v.reg]).map_err(asm_err)?;
        Ok(())
    }
}

/// Constants kept in registers over the row (`KEPT` of them: zmm24-31), and the rest's pool.
const KEPT: usize = 8;
/// Temporaries: zmm0-19.
const TEMPS: usize = 20;

#[derive(Clone, Default)]
struct Consts {
    kept: HashMap<u32, usize>,
    pool: HashMap<u32, CodeLabel>,
}

/// A value in a register: a temporary (freed once used), a broadcast input or a kept constant.
#[derive(Clone, Copy)]
struct V {
    reg: usize,
    temp: bool,
}

/// The expression emitter: temporaries from a free list, constants in their registers (or
/// broadcast into a temporary where not kept), inputs loaded on first use.
struct Em<'a> {
    x: &'a mut CodeAssembler,
    consts: Consts,
    bcast: &'a [bool],
    free: Vec<usize>,
    masked: bool,
    /// In the dry run: how often each constant is used.
    count: Option<HashMap<u32, usize>>,
}

type R = Result<V, CodegenError>;

impl<'a> Em<'a> {
    fn new(x: &'a mut CodeAssembler, consts: Consts, bcast: &'a [bool]) -> Em<'a> {
        Em { x, consts, bcast, free: (0..TEMPS).rev().collect(), masked: false, count: None }
    }

    fn temp(&mut self) -> Result<usize, CodegenError> {
        self.free.pop().ok_or_else(|| CodegenError::Compile {
            kernel: "wide elementwise".into(),
            msg: format!("the expression needs more than {TEMPS} registers"),
        })
    }

    fn done(&mut self, v: V) {
        if v.temp {
            self.free.push(v.reg);
        }
    }

    fn z(r: usize) -> AsmRegisterZmm {
        ZMM[r]
    }

    fn konst(&mut self, c: f32) -> R {
        self.bits(c.to_bits())
    }

    fn bits(&mut self, bits: u32) -> R {
        if let Some(n) = self.count.as_mut() {
            *n.entry(bits).or_default() += 1;
        }
        if let Some(&reg) = self.consts.kept.get(&bits) {
            return Ok(V { reg, temp: false });
        }
        let t = self.temp()?;
        match self.consts.pool.get(&bits) {
            Some(&label) => self.x.vbroadcastss(Self::z(t), dword_ptr(label)).map_err(asm_err)?,
            // The dry run: any code will do.
            None => {
                self.x.mov(eax, bits).map_err(asm_err)?;
                self.x.vpbroadcastd(Self::z(t), eax).map_err(asm_err)?;
            }
        }
        Ok(V { reg: t, temp: true })
    }

    fn input(&mut self, i: usize) -> R {
        if self.bcast[i] {
            return Ok(V { reg: 20 + i, temp: false });
        }
        let t = self.temp()?;
        let src = [rdx, rcx, r8, r9][i];
        let at = zmmword_ptr(src);
        if self.masked {
            self.x.vmovups(Self::z(t).k7().z(), at).map_err(asm_err)?;
        } else {
            self.x.vmovups(Self::z(t), at).map_err(asm_err)?;
        }
        Ok(V { reg: t, temp: true })
    }

    /// A three-operand op into a new temporary.
    fn op2(
        &mut self,
        a: V,
        b: V,
        f: impl FnOnce(&mut CodeAssembler, AsmRegisterZmm, AsmRegisterZmm, AsmRegisterZmm) -> Result<(), IcedError>,
    ) -> R {
        let t = self.temp()?;
        f(self.x, Self::z(t), Self::z(a.reg), Self::z(b.reg)).map_err(asm_err)?;
        self.done(a);
        self.done(b);
        Ok(V { reg: t, temp: true })
    }

    fn add(&mut self, a: V, b: V) -> R {
        self.op2(a, b, |x, d, a, b| x.vaddps(d, a, b))
    }
    fn sub(&mut self, a: V, b: V) -> R {
        self.op2(a, b, |x, d, a, b| x.vsubps(d, a, b))
    }
    fn mul(&mut self, a: V, b: V) -> R {
        self.op2(a, b, |x, d, a, b| x.vmulps(d, a, b))
    }
    fn div(&mut self, a: V, b: V) -> R {
        self.op2(a, b, |x, d, a, b| x.vdivps(d, a, b))
    }
    /// CLIF's fmax / fmin with a constant bound `b` (not NaN): VMAXPS/VMINPS return their second
    /// source when either is NaN, so with `a` second a NaN stays NaN.
    fn max_bound(&mut self, a: V, b: V) -> R {
        self.op2(b, a, |x, d, b, a| x.vmaxps(d, b, a))
    }
    fn min_bound(&mut self, a: V, b: V) -> R {
        self.op2(b, a, |x, d, b, a| x.vminps(d, b, a))
    }
    /// `a * b + c`, fused (the CLIF kernel's `fma` on an FMA host).
    fn fma(&mut self, a: V, b: V, c: V) -> R {
        let t = self.temp()?;
        self.x.vmovaps(Self::z(t), Self::z(c.reg)).map_err(asm_err)?;
        self.x.vfmadd231ps(Self::z(t), Self::z(a.reg), Self::z(b.reg)).map_err(asm_err)?;
        self.done(a);
        self.done(b);
        self.done(c);
        Ok(V { reg: t, temp: true })
    }
    fn neg(&mut self, a: V) -> R {
        let m = self.bits(0x8000_0000)?;
        self.op2(a, m, |x, d, a, m| x.vpxord(d, a, m))
    }
    fn abs(&mut self, a: V) -> R {
        let m = self.bits(0x7fff_ffff)?;
        self.op2(a, m, |x, d, a, m| x.vpandd(d, a, m))
    }
    /// `x < y ? a : b` (ordered: a NaN compares false), consuming all four.
    fn select_lt(&mut self, xv: V, y: V, a: V, b: V) -> R {
        self.x.vcmpps(k1, Self::z(xv.reg), Self::z(y.reg), 1).map_err(asm_err)?;
        let t = self.temp()?;
        self.x.vblendmps(Self::z(t).k1(), Self::z(b.reg), Self::z(a.reg)).map_err(asm_err)?;
        for v in [xv, y, a, b] {
            self.done(v);
        }
        Ok(V { reg: t, temp: true })
    }
    /// A copy of `v` the caller may consume while `v` lives on (values used twice).
    fn keep(&mut self, v: V) -> R {
        if !v.temp {
            return Ok(v);
        }
        let t = self.temp()?;
        self.x.vmovaps(Self::z(t), Self::z(v.reg)).map_err(asm_err)?;
        Ok(V { reg: t, temp: true })
    }

    fn expr(&mut self, e: &KExpr) -> R {
        match e {
            KExpr::In(i) => self.input(*i),
            KExpr::Const(c) => self.konst(*c),
            KExpr::Act(a, x) => {
                let v = self.expr(x)?;
                self.act(a, v)
            }
            KExpr::Bin(b, l, r) => {
                let x = self.expr(l)?;
                let y = self.expr(r)?;
                match b {
                    Bin::Ir(Binary::Add) => self.add(x, y),
                    Bin::Ir(Binary::Sub) => self.sub(x, y),
                    Bin::Ir(Binary::Mul) => self.mul(x, y),
                    Bin::Ir(Binary::Div) => self.div(x, y),
                    Bin::Ir(Binary::PRelu) => self.leaky(x, y),
                    // x < y ? y : x, and y < x ? y : x.
                    Bin::AtLeast => {
                        let (x2, y2) = (self.keep(x)?, self.keep(y)?);
                        self.select_lt(x, y, y2, x2)
                    }
                    Bin::AtMost => {
                        let (x2, y2) = (self.keep(x)?, self.keep(y)?);
                        self.select_lt(y, x, y2, x2)
                    }
                    other => unreachable!("{other:?} is not supported (see `supports`)"),
                }
            }
        }
    }

    /// `x < 0 ? a x : x`.
    fn leaky(&mut self, x: V, a: V) -> R {
        let (x2, x3) = (self.keep(x)?, self.keep(x)?);
        let a_x = self.mul(a, x2)?;
        let z = self.konst(0.0)?;
        self.select_lt(x, z, a_x, x3)
    }

    /// Clip's bounds: `x < lo ? lo : x`, then `hi < x ? hi : x`.
    fn clamp(&mut self, x: V, lo: Option<f32>, hi: Option<f32>) -> R {
        let mut v = x;
        if let Some(l) = lo {
            let (c, c2, v2) = (self.konst(l)?, self.konst(l)?, self.keep(v)?);
            v = self.select_lt(v, c, c2, v2)?;
        }
        if let Some(h) = hi {
            let (c, c2, v2) = (self.konst(h)?, self.konst(h)?, self.keep(v)?);
            v = self.select_lt(c, v, c2, v2)?;
        }
        Ok(v)
    }

    fn act(&mut self, a: &Activation, x: V) -> R {
        let u = match a {
            Activation::Clip { min, max } => return self.clamp(x, *min, *max),
            Activation::Unary(u) => u,
        };
        match u {
            Unary::Relu => {
                let (z, z2, x2) = (self.konst(0.0)?, self.konst(0.0)?, self.keep(x)?);
                self.select_lt(x, z, z2, x2)
            }
            Unary::LeakyRelu { alpha } => {
                let a = self.konst(*alpha)?;
                self.leaky(x, a)
            }
            Unary::Neg => self.neg(x),
            Unary::Abs => self.abs(x),
            Unary::Sqrt => {
                let t = self.temp()?;
                self.x.vsqrtps(Self::z(t), Self::z(x.reg)).map_err(asm_err)?;
                self.done(x);
                Ok(V { reg: t, temp: true })
            }
            Unary::HardSigmoid { alpha, beta } => {
                let (a, b) = (self.konst(*alpha)?, self.konst(*beta)?);
                let y = self.fma(x, a, b)?;
                self.clamp(y, Some(0.0), Some(1.0))
            }
            Unary::HardSwish => {
                let x2 = self.keep(x)?;
                let (a, b) = (self.konst(1.0 / 6.0)?, self.konst(0.5)?);
                let y = self.fma(x, a, b)?;
                let g = self.clamp(y, Some(0.0), Some(1.0))?;
                self.mul(x2, g)
            }
            Unary::Sigmoid => self.sigmoid(x),
            Unary::Swish { alpha } => {
                let x2 = self.keep(x)?;
                let a_x = if *alpha == 1.0 {
                    x
                } else {
                    let a = self.konst(*alpha)?;
                    self.mul(a, x)?
                };
                let s = self.sigmoid(a_x)?;
                self.mul(x2, s)
            }
            Unary::Tanh => self.tanh(x),
            Unary::Exp => self.exp(x),
            Unary::Erf => self.erf(x),
            Unary::Gelu { tanh } => {
                let x2 = self.keep(x)?;
                let inner = if *tanh {
                    let (xa, xb, xc) = (self.keep(x)?, self.keep(x)?, self.keep(x)?);
                    let x3 = self.mul(x, xa)?;
                    let x3 = self.mul(x3, xb)?;
                    let c = self.konst(0.044715)?;
                    let u = self.fma(x3, c, xc)?;
                    let k = self.konst((2.0 / std::f32::consts::PI).sqrt())?;
                    let u = self.mul(u, k)?;
                    self.tanh(u)?
                } else {
                    let k = self.konst(std::f32::consts::FRAC_1_SQRT_2)?;
                    let u = self.mul(x, k)?;
                    self.erf(u)?
                };
                let one = self.konst(1.0)?;
                let p = self.add(one, inner)?;
                let half = self.konst(0.5)?;
                let hx = self.mul(half, x2)?;
                self.mul(hx, p)
            }
            Unary::Elu { alpha } => {
                let (x2, x3) = (self.keep(x)?, self.keep(x)?);
                let z = self.konst(0.0)?;
                let neg = self.min_bound(x, z)?;
                let e = self.exp(neg)?;
                let one = self.konst(1.0)?;
                let em1 = self.sub(e, one)?;
                let a = self.konst(*alpha)?;
                let y = self.mul(a, em1)?;
                let z = self.konst(0.0)?;
                self.select_lt(x2, z, y, x3)
            }
            Unary::Log => unreachable!("Log is not supported (see `supports`)"),
        }
    }

    /// `1 / (1 + e^-x)`.
    fn sigmoid(&mut self, x: V) -> R {
        let n = self.neg(x)?;
        let e = self.exp(n)?;
        let one = self.konst(1.0)?;
        let d = self.add(one, e)?;
        let one = self.konst(1.0)?;
        self.div(one, d)
    }

    /// `kernels/math.rs`'s `vexp`, operation for operation.
    fn exp(&mut self, x: V) -> R {
        const HI: f32 = 88.72283;
        let x2 = self.keep(x)?;
        let lo = self.konst(-86.0)?;
        let xc = self.max_bound(x, lo)?;
        let hi = self.konst(HI)?;
        let xc = self.min_bound(xc, hi)?;
        let (magic, log2e) = (self.konst(12_582_912.0)?, self.konst(std::f32::consts::LOG2_E)?);
        let xc2 = self.keep(xc)?;
        let t = self.fma(xc, log2e, magic)?;
        let t2 = self.keep(t)?;
        let magic = self.konst(12_582_912.0)?;
        let nf = self.sub(t, magic)?;
        let nf2 = self.keep(nf)?;
        let ln2_hi = self.konst(-0.693_359_4)?;
        let r = self.fma(nf, ln2_hi, xc2)?;
        let ln2_lo = self.konst(2.121_944_4e-4)?;
        let r = self.fma(nf2, ln2_lo, r)?;
        let mut p = self.konst(1.0 / 5040.0)?;
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            let r2 = self.keep(r)?;
            let c = self.konst(c)?;
            p = self.fma(p, r2, c)?;
        }
        self.done(r);
        // 2^(n-1) from the exponent field: (t's bits - bits(magic - 126)) << 23.
        let mi = self.bits((12_582_912.0f32 - 126.0).to_bits())?;
        let e = self.op2(t2, mi, |x, d, a, b| x.vpsubd(d, a, b))?;
        let scale = {
            let t = self.temp()?;
            self.x.vpslld(Self::z(t), Self::z(e.reg), 23).map_err(asm_err)?;
            self.done(e);
            V { reg: t, temp: true }
        };
        let y = self.mul(p, scale)?;
        let two = self.konst(2.0)?;
        let y = self.mul(y, two)?;
        let (hi, inf) = (self.konst(HI)?, self.konst(f32::INFINITY)?);
        self.select_lt(hi, x2, inf, y)
    }

    /// `x (c0 + c1 x^2 + ...)`.
    fn odd_series(&mut self, x: V, coeffs: &[f32]) -> R {
        let (xa, xb) = (self.keep(x)?, self.keep(x)?);
        let x2 = self.mul(xa, xb)?;
        let mut p = self.konst(coeffs[coeffs.len() - 1])?;
        for &c in coeffs[..coeffs.len() - 1].iter().rev() {
            let x2b = self.keep(x2)?;
            let c = self.konst(c)?;
            p = self.fma(p, x2b, c)?;
        }
        self.done(x2);
        self.mul(p, x)
    }

    /// `kernels/math.rs`'s `verf`.
    fn erf(&mut self, x: V) -> R {
        let k = 2.0 / std::f64::consts::PI.sqrt();
        let series: Vec<f32> = [1.0, -1.0 / 3.0, 1.0 / 10.0, -1.0 / 42.0, 1.0 / 216.0, -1.0 / 1320.0, 1.0 / 9360.0]
            .iter()
            .map(|c| (c * k) as f32)
            .collect();
        let (xa, xb) = (self.keep(x)?, self.keep(x)?);
        let small = self.odd_series(x, &series)?;
        let large = self.erf_large(xa)?;
        let a = self.abs(xb)?;
        let half = self.konst(0.5)?;
        self.select_lt(a, half, small, large)
    }

    fn erf_large(&mut self, x: V) -> R {
        let xa = self.keep(x)?;
        let a = self.abs(x)?;
        let a2 = self.keep(a)?;
        let a3 = self.keep(a)?;
        let (one, pc) = (self.konst(1.0)?, self.konst(0.327_591_1)?);
        let d = self.fma(pc, a, one)?;
        let one = self.konst(1.0)?;
        let t = self.div(one, d)?;
        let mut poly = self.konst(1.061_405_4)?;
        for c in [-1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6] {
            let tb = self.keep(t)?;
            let c = self.konst(c)?;
            poly = self.fma(poly, tb, c)?;
        }
        let poly = self.mul(poly, t)?;
        let sq = self.mul(a2, a3)?;
        let na2 = self.neg(sq)?;
        let e = self.exp(na2)?;
        let pe = self.mul(poly, e)?;
        let one = self.konst(1.0)?;
        let y = self.sub(one, pe)?;
        self.odd_sign(xa, y)
    }

    /// `x < 0 ? -y : y`: an odd function from its value at |x|.
    fn odd_sign(&mut self, x: V, y: V) -> R {
        let y2 = self.keep(y)?;
        let ny = self.neg(y2)?;
        let zero = self.konst(0.0)?;
        self.select_lt(x, zero, ny, y)
    }

    /// `kernels/math.rs`'s `vtanh`.
    fn tanh(&mut self, x: V) -> R {
        let series = [1.0, -1.0 / 3.0, 2.0 / 15.0, -17.0 / 315.0, 62.0 / 2835.0, -1382.0 / 155925.0];
        let (xa, xb) = (self.keep(x)?, self.keep(x)?);
        let small = self.odd_series(x, &series)?;
        let large = self.tanh_large(xa)?;
        let a = self.abs(xb)?;
        let lim = self.konst(0.3)?;
        self.select_lt(a, lim, small, large)
    }

    fn tanh_large(&mut self, x: V) -> R {
        let xa = self.keep(x)?;
        let a = self.abs(x)?;
        let a2 = self.keep(a)?;
        let s = self.add(a, a2)?;
        let e = self.exp(s)?;
        let one = self.konst(1.0)?;
        let d = self.add(e, one)?;
        let two = self.konst(2.0)?;
        let q = self.div(two, d)?;
        let one = self.konst(1.0)?;
        let y = self.sub(one, q)?;
        self.odd_sign(xa, y)
    }
}

impl super::KernelSpec for WideExprKernel {
    fn name(&self) -> String {
        format!("avx512 elementwise of {} inputs", self.bcast.len())
    }
    fn emit(&self, _: &mut Kb) {
        unreachable!("the wide elementwise kernel is machine code (machine_code), not CLIF")
    }
    fn machine_code(&self) -> Option<Result<Vec<u8>, CodegenError>> {
        Some(self.assemble())
    }
    fn features(&self) -> &'static [&'static str] {
        &["avx512f"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An expression whose values outgrow the registers is left to the CLIF kernel (`fits`
    /// false, so the lowering does not take the row kernel), not a compile error; an activation
    /// chain as deep as GELU's fits.
    #[test]
    fn expressions_past_the_registers_do_not_fit() {
        // in0 + (in0 + (in0 + ...)): every left operand stays live while the right is computed.
        let mut deep = KExpr::In(0);
        for _ in 0..TEMPS + 2 {
            deep = KExpr::bin(Bin::Ir(Binary::Add), KExpr::In(0), deep);
        }
        let k = WideExprKernel { expr: deep, bcast: vec![false] };
        assert!(!k.fits());
        assert!(k.assemble().is_err());
        let gelu = KExpr::act(Activation::Unary(Unary::Gelu { tanh: false }), KExpr::In(0));
        let k = WideExprKernel { expr: KExpr::act(Activation::Unary(Unary::Sigmoid), gelu), bcast: vec![false] };
        assert!(k.fits());
        assert!(k.assemble().is_ok());
    }
}
