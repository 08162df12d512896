//! Elementwise math in generated code, for scalars (f32) and vectors (f32x4) alike:
//! activations, binary ops and fused expressions. Transcendental functions call the runtime's
//! helpers (lane by lane for vectors).

use crate::codegen::builder::F32X4;
use cranelift_codegen::ir::types::I32X4;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Value};
use incept_ir::ops::{Activation, Binary, Expr, Unary};
use incept_runtime::helpers::index as h;

use crate::codegen::builder::Kb;

/// Whether computing the activation calls a helper (so the kernel needs the helper table).
pub fn act_needs_helpers(a: &Activation) -> bool {
    matches!(
        a,
        Activation::Unary(
            Unary::Sigmoid
                | Unary::Tanh
                | Unary::Exp
                | Unary::Log
                | Unary::Erf
                | Unary::Elu { .. }
                | Unary::Gelu { .. }
                | Unary::Swish { .. }
        )
    )
}

/// A binary op of a kernel expression: the IR's, plus max and min (Max/Min nodes: IEEE 754
/// maximum/minimum, NaN-propagating) and Clip's bounds computed at run time (`AtLeast`:
/// `x < b ? b : x`, `AtMost`: `x > b ? b : x`, so a NaN x stays NaN).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Bin {
    Ir(Binary),
    Max,
    Min,
    AtLeast,
    AtMost,
}

/// An expression a kernel evaluates per element: the IR's [`Expr`] plus constants and max/min.
#[derive(Clone, Debug, PartialEq)]
pub enum KExpr {
    In(usize),
    Const(f32),
    Act(Activation, Box<KExpr>),
    Bin(Bin, Box<KExpr>, Box<KExpr>),
}

impl KExpr {
    pub fn from_ir(e: &Expr) -> KExpr {
        match e {
            Expr::Input(i) => KExpr::In(*i),
            Expr::Act(a, x) => KExpr::Act(a.clone(), Box::new(KExpr::from_ir(x))),
            Expr::Binary(b, l, r) => KExpr::Bin(Bin::Ir(*b), Box::new(KExpr::from_ir(l)), Box::new(KExpr::from_ir(r))),
        }
    }

    pub fn bin(b: Bin, l: KExpr, r: KExpr) -> KExpr {
        KExpr::Bin(b, Box::new(l), Box::new(r))
    }

    pub fn act(a: Activation, x: KExpr) -> KExpr {
        KExpr::Act(a, Box::new(x))
    }
}

pub fn expr_needs_helpers(e: &KExpr) -> bool {
    match e {
        KExpr::In(_) | KExpr::Const(_) => false,
        KExpr::Act(a, x) => act_needs_helpers(a) || expr_needs_helpers(x),
        KExpr::Bin(b, l, r) => *b == Bin::Ir(Binary::Pow) || expr_needs_helpers(l) || expr_needs_helpers(r),
    }
}

fn konst(kb: &mut Kb, like: Value, v: f32) -> Value {
    if kb.is_vec(like) { kb.vconst(v) } else { kb.fconst(v) }
}

fn helper1(kb: &mut Kb, helpers: Option<Value>, index: usize, x: Value) -> Value {
    let table = helpers.expect("kernel has the helper table");
    if kb.is_vec(x) {
        // exp, erf and tanh have straight-line vector forms; the rest go lane by lane.
        match index {
            h::EXP => return vexp(kb, x),
            h::ERF => return verf(kb, x),
            h::TANH => return vtanh(kb, x),
            _ => {}
        }
        kb.per_lane(x, |kb, s| kb.call_unary(table, index, s))
    } else {
        kb.call_unary(table, index, x)
    }
}

fn as_ints(kb: &mut Kb, v: Value) -> Value {
    kb.b.ins().bitcast(I32X4, MemFlagsData::new().with_endianness(Endianness::Little), v)
}

fn as_floats(kb: &mut Kb, v: Value) -> Value {
    kb.b.ins().bitcast(F32X4, MemFlagsData::new().with_endianness(Endianness::Little), v)
}

/// `e^x` on four lanes: `x = n ln 2 + r` with `n` rounded to nearest (by adding 1.5 * 2^23,
/// which leaves `n` in the low mantissa bits), `r` in [-ln2 / 2, ln2 / 2] in two steps (Cody and
/// Waite), `e^r` by its Taylor series to degree 7 (truncation below 1e-8 relative), and `2^n` built
/// in the exponent field as `2 * 2^(n-1)` so that n = 128 does not overflow it. Inputs above
/// ln(f32::MAX) give +inf; inputs below -86 give e^-86 (4e-38) instead of a denormal; NaN stays NaN.
pub fn vexp(kb: &mut Kb, x: Value) -> Value {
    const HI: f32 = 88.72283;
    let lo = kb.vconst(-86.0);
    let hi = kb.vconst(HI);
    let xc = kb.b.ins().fmax(x, lo);
    let xc = kb.b.ins().fmin(xc, hi);
    let magic = kb.vconst(12_582_912.0);
    let log2e = kb.vconst(std::f32::consts::LOG2_E);
    let t = kb.fma(xc, log2e, magic);
    let nf = kb.b.ins().fsub(t, magic);
    let ln2_hi = kb.vconst(-0.693_359_4);
    let ln2_lo = kb.vconst(2.121_944_4e-4);
    let r = kb.fma(nf, ln2_hi, xc);
    let r = kb.fma(nf, ln2_lo, r);
    let mut p = kb.vconst(1.0 / 5040.0);
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        let c = kb.vconst(c);
        p = kb.fma(p, r, c);
    }
    // 2^(n-1) from the exponent field: (n - 1 + 127) << 23, n taken from t's low bits.
    let ti = as_ints(kb, t);
    let mi = {
        let m = kb.vconst(12_582_912.0 - 126.0);
        as_ints(kb, m)
    };
    let e = kb.b.ins().isub(ti, mi);
    let e = kb.b.ins().ishl_imm_u(e, 23);
    let scale = as_floats(kb, e);
    let two = kb.vconst(2.0);
    let y = kb.b.ins().fmul(p, scale);
    let y = kb.b.ins().fmul(y, two);
    let inf = kb.vconst(f32::INFINITY);
    select_lt(kb, hi, x, inf, y)
}

/// An odd series `x (c0 + c1 x^2 + c2 x^4 + ...)` on four lanes.
fn odd_series(kb: &mut Kb, x: Value, coeffs: &[f32]) -> Value {
    let x2 = kb.b.ins().fmul(x, x);
    let mut p = kb.vconst(coeffs[coeffs.len() - 1]);
    for &c in coeffs[..coeffs.len() - 1].iter().rev() {
        let c = kb.vconst(c);
        p = kb.fma(p, x2, c);
    }
    kb.b.ins().fmul(p, x)
}

/// erf on four lanes: below |x| = 0.5 its Taylor series (relative error below 1e-8, so that tiny
/// inputs keep their relative precision), above it Abramowitz and Stegun 7.1.26,
/// `1 - (a1 t + ... + a5 t^5) e^(-x^2)` with `t = 1 / (1 + p |x|)` (absolute error below 1.5e-7),
/// with erf's odd symmetry.
pub fn verf(kb: &mut Kb, x: Value) -> Value {
    let k = 2.0 / std::f64::consts::PI.sqrt();
    let series: Vec<f32> = [1.0, -1.0 / 3.0, 1.0 / 10.0, -1.0 / 42.0, 1.0 / 216.0, -1.0 / 1320.0, 1.0 / 9360.0]
        .iter()
        .map(|c| (c * k) as f32)
        .collect();
    let small = odd_series(kb, x, &series);
    let large = verf_large(kb, x);
    let a = kb.b.ins().fabs(x);
    let half = kb.vconst(0.5);
    select_lt(kb, a, half, small, large)
}

fn verf_large(kb: &mut Kb, x: Value) -> Value {
    let a = kb.b.ins().fabs(x);
    let one = kb.vconst(1.0);
    let pc = kb.vconst(0.327_591_1);
    let d = kb.fma(pc, a, one);
    let t = kb.b.ins().fdiv(one, d);
    let mut poly = kb.vconst(1.061_405_4);
    for c in [-1.453_152_1, 1.421_413_8, -0.284_496_74, 0.254_829_6] {
        let c = kb.vconst(c);
        poly = kb.fma(poly, t, c);
    }
    let poly = kb.b.ins().fmul(poly, t);
    let a2 = kb.b.ins().fmul(a, a);
    let na2 = kb.b.ins().fneg(a2);
    let e = vexp(kb, na2);
    let pe = kb.b.ins().fmul(poly, e);
    let y = kb.b.ins().fsub(one, pe);
    let zero = kb.vconst(0.0);
    let ny = kb.b.ins().fneg(y);
    select_lt(kb, x, zero, ny, y)
}

/// tanh on four lanes: below |x| = 0.3 its Taylor series (relative error below 1e-8), above it
/// `1 - 2 / (e^(2|x|) + 1)` (absolute error about 1e-7; e^(2|x|) saturating gives exactly 1),
/// with tanh's odd symmetry. The series matters: `softcap * tanh(x / softcap)` with a huge
/// softcap multiplies tanh's error near 0 by it.
pub fn vtanh(kb: &mut Kb, x: Value) -> Value {
    let series = [1.0, -1.0 / 3.0, 2.0 / 15.0, -17.0 / 315.0, 62.0 / 2835.0, -1382.0 / 155925.0];
    let small = odd_series(kb, x, &series);
    let large = vtanh_large(kb, x);
    let a = kb.b.ins().fabs(x);
    let lim = kb.vconst(0.3);
    select_lt(kb, a, lim, small, large)
}

fn vtanh_large(kb: &mut Kb, x: Value) -> Value {
    let a = kb.b.ins().fabs(x);
    let a2 = kb.b.ins().fadd(a, a);
    let e = vexp(kb, a2);
    let one = kb.vconst(1.0);
    let two = kb.vconst(2.0);
    let d = kb.b.ins().fadd(e, one);
    let q = kb.b.ins().fdiv(two, d);
    let y = kb.b.ins().fsub(one, q);
    let zero = kb.vconst(0.0);
    let ny = kb.b.ins().fneg(y);
    select_lt(kb, x, zero, ny, y)
}

/// `x < y ? a : b`, for scalars or lane by lane for vectors. The reference's activations are
/// written as such comparisons, which decide what NaNs and zero signs give (Relu(-0) = -0 and
/// Relu(NaN) = NaN, as in ONNX Runtime), where `fmax`/`fmin` would not match.
pub fn select_lt(kb: &mut Kb, x: Value, y: Value, a: Value, b: Value) -> Value {
    let lt = kb.flt(x, y);
    if kb.is_vec(x) {
        let mask = kb.b.ins().bitcast(crate::codegen::builder::F32X4, cranelift_codegen::ir::MemFlagsData::new(), lt);
        kb.b.ins().bitselect(mask, a, b)
    } else {
        kb.b.ins().select(lt, a, b)
    }
}

/// `x < 0 ? a * x : x`: leaky ReLU and PRelu.
fn leaky(kb: &mut Kb, x: Value, a: Value) -> Value {
    let z = konst(kb, x, 0.0);
    let ax = kb.b.ins().fmul(a, x);
    select_lt(kb, x, z, ax, x)
}

/// Clip: `x < lo ? lo : x`, then `x > hi ? hi : x` (NaN stays NaN; lo > hi gives hi).
fn clamp(kb: &mut Kb, x: Value, lo: Option<f32>, hi: Option<f32>) -> Value {
    let mut v = x;
    if let Some(l) = lo {
        let c = konst(kb, x, l);
        v = select_lt(kb, v, c, c, v);
    }
    if let Some(h) = hi {
        let c = konst(kb, x, h);
        v = select_lt(kb, c, v, c, v);
    }
    v
}

/// `1 / (1 + e^-x)`.
fn sigmoid(kb: &mut Kb, x: Value, helpers: Option<Value>) -> Value {
    let n = kb.b.ins().fneg(x);
    let e = helper1(kb, helpers, h::EXP, n);
    let one = konst(kb, x, 1.0);
    let d = kb.b.ins().fadd(one, e);
    kb.b.ins().fdiv(one, d)
}

/// Applies an activation.
pub fn emit_act(kb: &mut Kb, a: &Activation, x: Value, helpers: Option<Value>) -> Value {
    match a {
        Activation::Clip { min, max } => clamp(kb, x, *min, *max),
        Activation::Unary(u) => match u {
            Unary::Relu => {
                let z = konst(kb, x, 0.0);
                select_lt(kb, x, z, z, x)
            }
            Unary::LeakyRelu { alpha } => {
                let a = konst(kb, x, *alpha);
                leaky(kb, x, a)
            }
            Unary::Neg => kb.b.ins().fneg(x),
            Unary::Abs => kb.b.ins().fabs(x),
            Unary::Sqrt => kb.b.ins().sqrt(x),
            Unary::HardSigmoid { alpha, beta } => {
                let (a, b) = (konst(kb, x, *alpha), konst(kb, x, *beta));
                let y = kb.fma(x, a, b);
                clamp(kb, y, Some(0.0), Some(1.0))
            }
            Unary::HardSwish => {
                let (a, b) = (konst(kb, x, 1.0 / 6.0), konst(kb, x, 0.5));
                let y = kb.fma(x, a, b);
                let g = clamp(kb, y, Some(0.0), Some(1.0));
                kb.b.ins().fmul(x, g)
            }
            Unary::Sigmoid => sigmoid(kb, x, helpers),
            Unary::Swish { alpha } => {
                // x * sigmoid(alpha x): for alpha = 1 the same operations as Mul(x, Sigmoid(x)).
                let ax = if *alpha == 1.0 {
                    x
                } else {
                    let a = konst(kb, x, *alpha);
                    kb.b.ins().fmul(a, x)
                };
                let s = sigmoid(kb, ax, helpers);
                kb.b.ins().fmul(x, s)
            }
            Unary::Tanh => helper1(kb, helpers, h::TANH, x),
            Unary::Exp => helper1(kb, helpers, h::EXP, x),
            Unary::Log => helper1(kb, helpers, h::LOG, x),
            Unary::Erf => helper1(kb, helpers, h::ERF, x),
            Unary::Gelu { tanh } => {
                // 0.5 x (1 + erf(x / sqrt 2)), or with tanh(sqrt(2 / pi) (x + 0.044715 x^3)).
                let inner = if *tanh {
                    let x3 = kb.b.ins().fmul(x, x);
                    let x3 = kb.b.ins().fmul(x3, x);
                    let c = konst(kb, x, 0.044715);
                    let u = kb.fma(x3, c, x);
                    let k = konst(kb, x, (2.0 / std::f32::consts::PI).sqrt());
                    let u = kb.b.ins().fmul(u, k);
                    helper1(kb, helpers, h::TANH, u)
                } else {
                    let k = konst(kb, x, std::f32::consts::FRAC_1_SQRT_2);
                    let u = kb.b.ins().fmul(x, k);
                    helper1(kb, helpers, h::ERF, u)
                };
                let one = konst(kb, x, 1.0);
                let p = kb.b.ins().fadd(one, inner);
                let half = konst(kb, x, 0.5);
                let hx = kb.b.ins().fmul(half, x);
                kb.b.ins().fmul(hx, p)
            }
            Unary::Elu { alpha } => {
                // x < 0 ? alpha * (exp(x) - 1) : x; exp of min(x, 0) so large inputs do not
                // overflow on the branch that is thrown away.
                let z = konst(kb, x, 0.0);
                let neg = kb.b.ins().fmin(x, z);
                let e = helper1(kb, helpers, h::EXP, neg);
                let one = konst(kb, x, 1.0);
                let em1 = kb.b.ins().fsub(e, one);
                let a = konst(kb, x, *alpha);
                let y = kb.b.ins().fmul(a, em1);
                select_lt(kb, x, z, y, x)
            }
        },
    }
}

/// Applies a binary op.
pub fn emit_binary(kb: &mut Kb, b: Binary, x: Value, y: Value, helpers: Option<Value>) -> Value {
    match b {
        Binary::Add => kb.b.ins().fadd(x, y),
        Binary::Sub => kb.b.ins().fsub(x, y),
        Binary::Mul => kb.b.ins().fmul(x, y),
        Binary::Div => kb.b.ins().fdiv(x, y),
        Binary::PRelu => leaky(kb, x, y),
        Binary::Pow => {
            let table = helpers.expect("kernel has the helper table");
            if kb.is_vec(x) {
                let mut out = x;
                for lane in 0..4u8 {
                    let a = kb.b.ins().extractlane(x, lane);
                    let e = kb.b.ins().extractlane(y, lane);
                    let r = kb.call_binary(table, h::POW, a, e);
                    out = kb.b.ins().insertlane(out, r, lane);
                }
                out
            } else {
                kb.call_binary(table, h::POW, x, y)
            }
        }
    }
}

/// Evaluates an expression over `leaves` (all scalars or all vectors, like `like`).
pub fn emit_expr(kb: &mut Kb, e: &KExpr, leaves: &[Value], like: Value, helpers: Option<Value>) -> Value {
    match e {
        KExpr::In(i) => leaves[*i],
        KExpr::Const(c) => konst(kb, like, *c),
        KExpr::Act(a, x) => {
            let v = emit_expr(kb, x, leaves, like, helpers);
            emit_act(kb, a, v, helpers)
        }
        KExpr::Bin(b, l, r) => {
            let x = emit_expr(kb, l, leaves, like, helpers);
            let y = emit_expr(kb, r, leaves, like, helpers);
            match b {
                Bin::Ir(b) => emit_binary(kb, *b, x, y, helpers),
                Bin::Max => kb.b.ins().fmax(x, y),
                Bin::Min => kb.b.ins().fmin(x, y),
                Bin::AtLeast => select_lt(kb, x, y, y, x),
                Bin::AtMost => select_lt(kb, y, x, y, x),
            }
        }
    }
}
