//! ONNX Runtime's quantized operators of domain `com.microsoft`, which its `quantize_static`
//! writes in the QOperator format: QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu,
//! QLinearConcat, QLinearGlobalAveragePool, QLinearAveragePool, QLinearSoftmax, QGemm.
//!
//! Each computes what ONNX Runtime's CPU kernel computes, in the same float types and order
//! (measured against ONNX Runtime 1.32 on an AVX-512 CPU): scales and zero points are per
//! tensor; `sat` saturates to the output type; rounding is half to even. Where ONNX Runtime's
//! result depends on its SIMD path, the definition here follows the AVX2/AVX-512 path and says so.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::binary::{broadcast_offsets, broadcast_shapes};
use crate::ops::conv::{Window, Window3, spatial_dims};
use crate::ops::quant::{ints, qrange, quantize, saturate, tensor_of};
use crate::ops::{InferCx, Op, OpDef, input, norm_axis, opt_input};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

/// A u8 or i8 tensor.
fn expect_q(ty: &TensorType, what: &str) -> Result<(), OpError> {
    match ty.dtype {
        DType::U8 | DType::I8 => Ok(()),
        d => Err(OpError::Unsupported(format!("{what} of type {d} (only u8 and i8)"))),
    }
}

/// Checks the input count and that the slots in `required` are present (the others, zero points,
/// may be given as empty names).
fn slots(cx: &InferCx, min: usize, max: usize, required: &[usize]) -> Result<(), OpError> {
    if cx.len() < min || cx.len() > max {
        invalid!("expects {min} to {max} inputs, found {}", cx.len());
    }
    for &i in required {
        cx.ty(i)?;
    }
    Ok(())
}

/// A per-tensor scale (f32) and its optional zero point of type `of`.
fn expect_params(cx: &InferCx, scale: usize, zero: Option<usize>, of: DType, what: &str) -> Result<(), OpError> {
    let one = |t: &TensorType| t.rank() == 0 || (t.rank() == 1 && t.shape[0] == Dim::Known(1));
    let s = cx.ty(scale)?;
    if s.dtype != DType::F32 || !one(s) {
        invalid!("{what} scale {s} must be one f32");
    }
    if let Some(z) = zero.and_then(|z| cx.opt_ty(z)) {
        if !one(z) {
            invalid!("{what} zero point {z} must be one value");
        }
        if z.dtype != of {
            invalid!("{what} zero point is {} but must be {of}", z.dtype);
        }
    }
    Ok(())
}

/// A per-tensor scale and zero point at evaluation time (an absent zero point is 0).
fn params(inputs: &[Option<&Tensor>], scale: usize, zero: usize) -> Result<(f32, i32), OpError> {
    let s = input(inputs, scale)?.view::<f32>()?[0];
    let z = match opt_input(inputs, zero) {
        Some(z) => z.to_i64s()?[0] as i32,
        None => 0,
    };
    Ok((s, z))
}

fn range(d: DType) -> Result<(i32, i32), OpError> {
    qrange(d).ok_or_else(|| OpError::Unsupported(format!("quantized values of type {d}")))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QBinaryKind {
    Add,
    Mul,
}

/// QLinearAdd and QLinearMul: inputs A, A_scale, A_zero_point?, B, B_scale, B_zero_point?,
/// C_scale, C_zero_point?, numpy broadcasting.
/// - Add (ONNX Runtime's AVX2/AVX-512 kernel, fused multiply-adds): with `ra = sa / sc` and
///   `rb = sb / sc`, `fixed = zc - fma(ra, za, rb * zb)` and `y = fma(a, ra, fma(b, rb, fixed))`;
///   when A alone is constant along the innermost dim the two swap places (A takes B's inner
///   role), as that kernel does. Its SSE2 and generic paths differ in about 1e-5 of elements.
/// - Mul: `(a - za) * (b - zb)` exactly in i32, then `f32(p) * ((sa * sb) / sc) + zc`.
#[derive(Clone, Debug, PartialEq)]
pub struct QLinearBinary {
    pub kind: QBinaryKind,
}

impl QLinearBinary {
    pub fn build(kind: QBinaryKind, _: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::QLinearBinary(QLinearBinary { kind }))
    }
}

impl OpDef for QLinearBinary {
    fn name(&self) -> &'static str {
        match self.kind {
            QBinaryKind::Add => "QLinearAdd",
            QBinaryKind::Mul => "QLinearMul",
        }
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        slots(cx, 7, 8, &[0, 1, 3, 4, 6])?;
        let (a, b) = (cx.ty(0)?, cx.ty(3)?);
        expect_q(a, "A")?;
        if b.dtype != a.dtype {
            invalid!("A is {} but B is {}", a.dtype, b.dtype);
        }
        expect_params(cx, 1, Some(2), a.dtype, "A")?;
        expect_params(cx, 4, Some(5), a.dtype, "B")?;
        expect_params(cx, 6, Some(7), a.dtype, "C")?;
        Ok(vec![TensorType::new(a.dtype, broadcast_shapes(&a.shape, &b.shape)?)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 3)?);
        let ((sa, za), (sb, zb), (sc, zc)) = (params(inputs, 1, 2)?, params(inputs, 4, 5)?, params(inputs, 6, 7)?);
        let known = |s: &[usize]| crate::shape::known_shape(s);
        let out: Vec<usize> =
            broadcast_shapes(&known(a.shape()), &known(b.shape()))?.iter().map(|d| d.known().unwrap_or(0)).collect();
        let (oa, ob) = (broadcast_offsets(a.shape(), &out), broadcast_offsets(b.shape(), &out));
        let (av, bv) = (ints(a)?, ints(b)?);
        let swap = QLinearBinary::swaps(a.shape(), b.shape(), &out);
        let q = QParams { a: (sa, za), b: (sb, zb), c: (sc, zc), range: range(a.dtype())? };
        let y: Vec<i32> = oa.iter().zip(&ob).map(|(&i, &j)| self.value(av[i], bv[j], &q, swap)).collect();
        Ok(vec![tensor_of(a.dtype(), out, &y)?])
    }
}

/// The per-tensor parameters of a quantized binary op: (scale, zero point) of A, B and the
/// output, and the output's range.
#[derive(Clone, Copy, Debug)]
pub struct QParams {
    pub a: (f32, i32),
    pub b: (f32, i32),
    pub c: (f32, i32),
    pub range: (i32, i32),
}

impl QLinearBinary {
    /// Whether A takes B's inner place in QLinearAdd's fused sum: A alone is constant along the
    /// innermost dim of the output.
    pub fn swaps(a: &[usize], b: &[usize], out: &[usize]) -> bool {
        let inner = |s: &[usize]| s.last().copied().unwrap_or(1);
        inner(a) == 1 && inner(b) != 1 && inner(out) != 1
    }

    /// The output for one pair of input integers: QLinearAdd `x ra + (y rb + fixed)` fused (or
    /// with the operands' places swapped), QLinearMul `f32((x - za)(y - zb)) m + zc`, saturated
    /// (the coefficients are [`QParams::add_coefficients`] and [`QParams::mul_multiplier`]).
    pub fn value(&self, x: i32, y: i32, q: &QParams, swap: bool) -> i32 {
        match self.kind {
            QBinaryKind::Add => {
                let (ra, rb, fixed) = q.add_coefficients();
                let (x, y) = (x as f32, y as f32);
                let v = if swap { y.mul_add(rb, x.mul_add(ra, fixed)) } else { x.mul_add(ra, y.mul_add(rb, fixed)) };
                saturate(v, q.range)
            }
            QBinaryKind::Mul => {
                let p = (x - q.a.1).wrapping_mul(y - q.b.1);
                saturate(p as f32 * q.mul_multiplier() + q.c.1 as f32, q.range)
            }
        }
    }
}

impl QParams {
    /// QLinearAdd's `(ra, rb, fixed)`: `sa / sc`, `sb / sc` and `zc - (ra za + rb zb)` (one
    /// fused multiply-add), as ONNX Runtime's kernel computes them.
    pub fn add_coefficients(&self) -> (f32, f32, f32) {
        let ((sa, za), (sb, zb), (sc, zc)) = (self.a, self.b, self.c);
        let (ra, rb) = (sa / sc, sb / sc);
        (ra, rb, zc as f32 - ra.mul_add(za as f32, rb * zb as f32))
    }

    /// QLinearMul's multiplier `(sa sb) / sc`.
    pub fn mul_multiplier(&self) -> f32 {
        (self.a.0 * self.b.0) / self.c.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QLookupKind {
    Sigmoid,
    LeakyRelu { alpha: f32 },
}

/// QLinearSigmoid and QLinearLeakyRelu: inputs X, X_scale, X_zero_point?, Y_scale,
/// Y_zero_point?. Each input value `x` is dequantized (`xs * (x - xz)` in f32), the function
/// applied in f32, and the result quantized (`x / ys` rounded half to even, plus `yz`,
/// saturated): the 256-entry table ONNX Runtime builds. Sigmoid here is `1 / (1 + exp(-d))`
/// rounded once to f32; ONNX Runtime evaluates a rational approximation instead, so a table
/// entry whose value lies within an f32 rounding of a halfway point can differ by one step.
#[derive(Clone, Debug, PartialEq)]
pub struct QLinearLookup {
    pub kind: QLookupKind,
}

impl QLinearLookup {
    pub fn build_sigmoid(_: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::QLinearLookup(QLinearLookup { kind: QLookupKind::Sigmoid }))
    }
    pub fn build_leaky_relu(a: &mut Attrs) -> Result<Op, OpError> {
        let alpha = a.float("alpha", 0.01)?;
        Ok(Op::QLinearLookup(QLinearLookup { kind: QLookupKind::LeakyRelu { alpha } }))
    }

    /// The function on a dequantized value.
    pub fn apply(&self, d: f32) -> f32 {
        match self.kind {
            QLookupKind::Sigmoid => (1.0 / (1.0 + (-(d as f64)).exp())) as f32,
            QLookupKind::LeakyRelu { alpha } => {
                if d >= 0.0 {
                    d
                } else {
                    alpha * d
                }
            }
        }
    }
}

impl OpDef for QLinearLookup {
    fn name(&self) -> &'static str {
        match self.kind {
            QLookupKind::Sigmoid => "QLinearSigmoid",
            QLookupKind::LeakyRelu { .. } => "QLinearLeakyRelu",
        }
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        slots(cx, 4, 5, &[0, 1, 3])?;
        let x = cx.ty(0)?;
        expect_q(x, "X")?;
        expect_params(cx, 1, Some(2), x.dtype, "X")?;
        expect_params(cx, 3, Some(4), x.dtype, "Y")?;
        Ok(vec![x.clone()])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let ((xs, xz), (ys, yz)) = (params(inputs, 1, 2)?, params(inputs, 3, 4)?);
        let r = range(x.dtype())?;
        let y: Vec<i32> = ints(x)?.into_iter().map(|q| quantize(self.apply(xs * (q - xz) as f32), ys, yz, r)).collect();
        Ok(vec![tensor_of(x.dtype(), x.shape().to_vec(), &y)?])
    }
    fn attrs(&self) -> AttrList {
        match self.kind {
            QLookupKind::Sigmoid => vec![],
            QLookupKind::LeakyRelu { alpha } => vec![("alpha", AttrValue::Float(alpha))],
        }
    }
}

/// QLinearConcat: inputs Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) per tensor;
/// each value requantised as `xs * (x - xz)` (f32) divided by `ys`, rounded half to even,
/// plus `yz`, saturated (an input with the output's scale and zero point is copied unchanged,
/// which the same arithmetic gives).
#[derive(Clone, Debug, PartialEq)]
pub struct QLinearConcat {
    pub axis: i64,
}

impl QLinearConcat {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let axis = a.opt_int("axis")?.ok_or_else(|| OpError::Invalid("attribute 'axis' is required".into()))?;
        Ok(Op::QLinearConcat(QLinearConcat { axis }))
    }
}

impl OpDef for QLinearConcat {
    fn name(&self) -> &'static str {
        "QLinearConcat"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        if cx.len() < 5 || !(cx.len() - 2).is_multiple_of(3) {
            invalid!(
                "expects Y_scale, Y_zero_point and triples of X, X_scale, X_zero_point; found {} inputs",
                cx.len()
            );
        }
        let yz = cx.ty(1)?;
        expect_q(yz, "Y zero point")?;
        expect_params(cx, 0, Some(1), yz.dtype, "Y")?;
        let first = cx.ty(2)?;
        let ax = norm_axis(self.axis, first.rank())?;
        let mut shape = first.shape.clone();
        let mut total = 0usize;
        for k in 0..(cx.len() - 2) / 3 {
            let x = cx.ty(2 + 3 * k)?;
            if x.dtype != yz.dtype {
                invalid!("input {k} is {} but the output is {}", x.dtype, yz.dtype);
            }
            expect_params(cx, 3 + 3 * k, Some(4 + 3 * k), x.dtype, &format!("input {k}"))?;
            if x.rank() != first.rank() {
                invalid!("input {k} has rank {}, the first {}", x.rank(), first.rank());
            }
            for (d, (a, b)) in x.shape.iter().zip(&first.shape).enumerate() {
                if d != ax && a != b {
                    invalid!("input {k} {x} does not match the first {first} off axis {ax}");
                }
            }
            total += crate::ops::need_known(&x.shape[ax], "the concatenated dim")?;
        }
        shape[ax] = Dim::Known(total);
        Ok(vec![TensorType::new(yz.dtype, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (ys, yz) = params(inputs, 0, 1)?;
        let yt = input(inputs, 1)?.dtype();
        let r = range(yt)?;
        let first = input(inputs, 2)?;
        let ax = norm_axis(self.axis, first.rank())?;
        let outer: usize = first.shape()[..ax].iter().product();
        // Each input's requantised values, its chunk per outer index, and its extent on the axis.
        let parts: Vec<(Vec<i32>, usize, usize)> = (0..(inputs.len() - 2) / 3)
            .map(|k| {
                let x = input(inputs, 2 + 3 * k)?;
                let (xs, xz) = params(inputs, 3 + 3 * k, 4 + 3 * k)?;
                let q: Vec<i32> = ints(x)?.into_iter().map(|v| quantize(xs * (v - xz) as f32, ys, yz, r)).collect();
                let chunk: usize = x.shape()[ax..].iter().product();
                Ok((q, chunk, x.shape()[ax]))
            })
            .collect::<Result<_, OpError>>()?;
        let mut out = Vec::with_capacity(parts.iter().map(|(q, _, _)| q.len()).sum());
        for o in 0..outer {
            for (q, chunk, _) in &parts {
                out.extend_from_slice(&q[o * chunk..][..*chunk]);
            }
        }
        let mut shape = first.shape().to_vec();
        shape[ax] = parts.iter().map(|(_, _, n)| n).sum();
        Ok(vec![tensor_of(yt, shape, &out)?])
    }
    fn attrs(&self) -> AttrList {
        vec![("axis", AttrValue::Int(self.axis))]
    }
}

/// NCHW dims of an NCHW or NHWC (`channels_last`) shape, and back.
fn to_channels_first(shape: &[usize], channels_last: bool) -> Vec<usize> {
    if !channels_last || shape.len() < 3 {
        return shape.to_vec();
    }
    let mut s = vec![shape[0], shape[shape.len() - 1]];
    s.extend_from_slice(&shape[1..shape.len() - 1]);
    s
}

/// The element index of NCHW position `i` (row-major) in an NHWC tensor of NCHW `shape`.
fn nhwc_index(i: usize, shape: &[usize]) -> usize {
    let (c, plane) = (shape[1], shape[2..].iter().product::<usize>());
    let (n, rest) = (i / (c * plane), i % (c * plane));
    let (ch, p) = (rest / plane, rest % plane);
    (n * plane + p) * c + ch
}

/// QLinearGlobalAveragePool: inputs X, x_scale, x_zero_point, y_scale, y_zero_point;
/// `channels_last`. Per channel, `acc = sum(x) - xz * S` in i32 over the S spatial positions,
/// then `f32(acc) * (xs / (ys * S))` rounded half to even, plus `yz`, saturated.
#[derive(Clone, Debug, PartialEq)]
pub struct QLinearGlobalAveragePool {
    pub channels_last: bool,
}

impl QLinearGlobalAveragePool {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::QLinearGlobalAveragePool(QLinearGlobalAveragePool { channels_last: a.int("channels_last", 0)? != 0 }))
    }
}

/// The integer global average of `s` values summing to `sum` (see QLinearGlobalAveragePool).
pub fn global_average(sum: i64, s: usize, (xs, xz): (f32, i32), (ys, yz): (f32, i32), r: (i32, i32)) -> i32 {
    let acc = (sum - xz as i64 * s as i64) as i32;
    let scale = xs / (ys * s as f32);
    saturate((acc as f32 * scale).round_ties_even() + yz as f32, r)
}

impl OpDef for QLinearGlobalAveragePool {
    fn name(&self) -> &'static str {
        "QLinearGlobalAveragePool"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(5, 5)?;
        let x = cx.ty(0)?;
        expect_q(x, "X")?;
        expect_params(cx, 1, Some(2), x.dtype, "X")?;
        expect_params(cx, 3, Some(4), x.dtype, "Y")?;
        if x.rank() < 3 {
            invalid!("input must have rank >= 3, found {x}");
        }
        let mut shape = x.shape.clone();
        let spatial = if self.channels_last { 1..x.rank() - 1 } else { 2..x.rank() };
        for d in spatial {
            shape[d] = Dim::Known(1);
        }
        Ok(vec![TensorType::new(x.dtype, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (xp, yp) = (params(inputs, 1, 2)?, params(inputs, 3, 4)?);
        let r = range(x.dtype())?;
        let cf = to_channels_first(x.shape(), self.channels_last);
        let (planes, s) = (cf[0] * cf[1], cf[2..].iter().product::<usize>());
        let xv = ints(x)?;
        let at = |i: usize| if self.channels_last { nhwc_index(i, &cf) } else { i };
        // Channel-first order of planes is also the channels-last order of the 1x1 output.
        let y: Vec<i32> = (0..planes)
            .map(|p| {
                let sum: i64 = (0..s).map(|k| xv[at(p * s + k)] as i64).sum();
                global_average(sum, s, xp, yp, r)
            })
            .collect();
        let mut shape = x.shape().to_vec();
        let spatial = if self.channels_last { 1..shape.len() - 1 } else { 2..shape.len() };
        for d in spatial {
            shape[d] = 1;
        }
        Ok(vec![tensor_of(x.dtype(), shape, &y)?])
    }
    fn attrs(&self) -> AttrList {
        vec![("channels_last", AttrValue::Int(self.channels_last as i64))]
    }
}

/// QLinearAveragePool: inputs X, x_scale, x_zero_point?, y_scale, y_zero_point?; AveragePool's
/// window attributes (no dilations) and `channels_last`. Each window sums the dequantized
/// values (`xs * (x - xz)`, f32) in f32 in row-major window order, divides by the count (the
/// window clipped to the input, or to the padded input with `count_include_pad`), and
/// quantizes `avg / ys + yz` rounded half to even, saturated. A window that covers the whole
/// unpadded input takes QLinearGlobalAveragePool's integer path instead, as ONNX Runtime does.
#[derive(Clone, Debug, PartialEq)]
pub struct QLinearAveragePool {
    pub window: Window,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
    pub channels_last: bool,
}

impl QLinearAveragePool {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let window = Window::from_attrs(a)?;
        if window.kernel.is_empty() {
            invalid!("attribute 'kernel_shape' is required");
        }
        if window.dilations.iter().any(|&d| d != 1) {
            return Err(OpError::Unsupported("QLinearAveragePool with dilations".into()));
        }
        Ok(Op::QLinearAveragePool(QLinearAveragePool {
            window,
            ceil_mode: a.int("ceil_mode", 0)? != 0,
            count_include_pad: a.int("count_include_pad", 0)? != 0,
            channels_last: a.int("channels_last", 0)? != 0,
        }))
    }
}

/// The window of output `o` along one dim (stride `s`, kernel `k`, pads `p` before and `q`
/// after, input `n`): its first and end real input positions, and how many of its positions lie
/// in the padded input.
pub fn span(o: usize, s: usize, k: usize, p: usize, q: usize, n: usize) -> (usize, usize, usize) {
    let start = (o * s) as i64 - p as i64;
    let end = start + k as i64;
    let padded = end.min((n + q) as i64) - start.max(-(p as i64));
    (start.max(0) as usize, end.min(n as i64).max(0) as usize, padded.max(0) as usize)
}

impl QLinearAveragePool {
    /// The divisor of a window from its spans along each dim (see [`span`]): its real positions,
    /// or with `count_include_pad` its positions in the padded input.
    pub fn count(&self, spans: [(usize, usize, usize); 3]) -> usize {
        if self.count_include_pad {
            spans.iter().map(|s| s.2).product()
        } else {
            spans.iter().map(|s| s.1.saturating_sub(s.0)).product()
        }
    }
}

impl OpDef for QLinearAveragePool {
    fn name(&self) -> &'static str {
        "QLinearAveragePool"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        slots(cx, 4, 5, &[0, 1, 3])?;
        let x = cx.ty(0)?;
        expect_q(x, "X")?;
        expect_params(cx, 1, Some(2), x.dtype, "X")?;
        expect_params(cx, 3, Some(4), x.dtype, "Y")?;
        if x.rank() < 3 || x.rank() > 5 {
            invalid!("input must have rank 3 to 5, found {x}");
        }
        let mut cf = x.clone();
        if self.channels_last {
            let r = x.rank();
            cf.shape = vec![x.shape[0].clone(), x.shape[r - 1].clone()];
            cf.shape.extend_from_slice(&x.shape[1..r - 1]);
        }
        let spatial = spatial_dims(&cf, "input")?;
        let out = self.window.resolve(&spatial, self.ceil_mode)?;
        let mut shape = vec![cf.shape[0].clone()];
        if !self.channels_last {
            shape.push(cf.shape[1].clone());
        }
        shape.extend(out.into_iter().map(Dim::Known));
        if self.channels_last {
            shape.push(cf.shape[1].clone());
        }
        Ok(vec![TensorType::new(x.dtype, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let ((xs, xz), (ys, yz)) = (params(inputs, 1, 2)?, params(inputs, 3, 4)?);
        let r = range(x.dtype())?;
        let cf = to_channels_first(x.shape(), self.channels_last);
        let mut win = self.window.clone();
        let osp = win.resolve(&cf[2..], self.ceil_mode)?;
        let global = win.kernel == cf[2..] && win.pads.iter().all(|&p| p == 0);
        let Window3 {
            input: [id, ih, iw],
            output: [od, oh, ow],
            kernel: [kd, kh, kw],
            strides: [sd, sh, sw],
            pads: [pd, ph, pw],
            ends: [qd, qh, qw],
            ..
        } = win.in3(&cf[2..], &osp);
        let xv = ints(x)?;
        let at = |i: usize| if self.channels_last { nhwc_index(i, &cf) } else { i };
        let planes = cf[0] * cf[1];
        let plane = id * ih * iw;
        let mut out = Vec::with_capacity(planes * od * oh * ow);
        for p in 0..planes {
            let v = |z: usize, y: usize, xx: usize| xv[at(p * plane + (z * ih + y) * iw + xx)];
            if global {
                let sum: i64 = (0..plane).map(|k| xv[at(p * plane + k)] as i64).sum();
                out.push(global_average(sum, plane, (xs, xz), (ys, yz), r));
                continue;
            }
            for oz in 0..od {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (z0, z1, pz) = span(oz, sd, kd, pd, qd, id);
                        let (y0, y1, py) = span(oy, sh, kh, ph, qh, ih);
                        let (x0, x1, px) = span(ox, sw, kw, pw, qw, iw);
                        let mut sum = 0f32;
                        for z in z0..z1 {
                            for y in y0..y1 {
                                for xx in x0..x1 {
                                    sum += xs * (v(z, y, xx) - xz) as f32;
                                }
                            }
                        }
                        let count = self.count([(z0, z1, pz), (y0, y1, py), (x0, x1, px)]);
                        out.push(saturate(sum / count as f32 / ys + yz as f32, r));
                    }
                }
            }
        }
        // `out` is channel-first; a channels-last output reorders it.
        let mut ocf = vec![cf[0], cf[1]];
        ocf.extend(&osp);
        let (shape, y) = if self.channels_last {
            let mut y = vec![0; out.len()];
            for (i, &q) in out.iter().enumerate() {
                y[nhwc_index(i, &ocf)] = q;
            }
            let mut s = vec![ocf[0]];
            s.extend(&osp);
            s.push(ocf[1]);
            (s, y)
        } else {
            (ocf, out)
        };
        Ok(vec![tensor_of(x.dtype(), shape, &y)?])
    }
    fn attrs(&self) -> AttrList {
        let mut out = vec![];
        self.window.write_attrs(&mut out);
        out.push(("ceil_mode", AttrValue::Int(self.ceil_mode as i64)));
        out.push(("count_include_pad", AttrValue::Int(self.count_include_pad as i64)));
        out.push(("channels_last", AttrValue::Int(self.channels_last as i64)));
        out
    }
}

/// QLinearSoftmax: inputs X, X_scale, x_zero_point? (unused: the softmax is shift-invariant),
/// y_scale, y_zero_point; `opset` (below 13: the input is coerced to 2-D at `axis`, else the
/// softmax runs along `axis`), `axis` (default -1). For a row with maximum m of length D,
/// `B = max(0, ln(f32::MAX / D) - 5) / xs` and `v = f32(exp((x - m + B) * xs))` (f64 exponent);
/// `sum` adds the v in f32 in order; the output is `v * f32(f32(1 / sum) * floor(1 / ys))`
/// plus `yz`, rounded half to even, saturated. ONNX Runtime adds the v in eight SIMD lanes, so
/// a value within an f32 rounding of a halfway point can come out one step apart.
#[derive(Clone, Debug, PartialEq)]
pub struct QLinearSoftmax {
    pub axis: i64,
    pub opset: i64,
}

impl QLinearSoftmax {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let opset = a.opt_int("opset")?.ok_or_else(|| OpError::Invalid("attribute 'opset' is required".into()))?;
        Ok(Op::QLinearSoftmax(QLinearSoftmax { axis: a.int("axis", -1)?, opset }))
    }
}

impl QLinearSoftmax {
    /// `f32(exp((-i + B) * xs))` for i = 0..=255 (an element i below its row's maximum), with
    /// `B = max(0, ln(f32::MAX / d) - 5) / xs`, the exponent in f64.
    pub fn exps(xs: f32, d: usize) -> Vec<f32> {
        let bias = ((f32::MAX as f64 / d.max(1) as f64).ln() - 5.0).max(0.0) / xs as f64;
        (0..256).map(|i| ((-(i as f64) + bias) * xs as f64).exp() as f32).collect()
    }

    /// The row length, and the elements between a row's consecutive elements.
    pub fn rows(&self, shape: &[usize]) -> Result<(usize, usize), OpError> {
        let ax = norm_axis(self.axis, shape.len())?;
        Ok(if self.opset < 13 {
            (shape[ax..].iter().product::<usize>(), 1)
        } else {
            (shape[ax], shape[ax + 1..].iter().product::<usize>())
        })
    }
}

impl OpDef for QLinearSoftmax {
    fn name(&self) -> &'static str {
        "QLinearSoftmax"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        slots(cx, 4, 5, &[0, 1, 3, 4])?;
        let x = cx.ty(0)?;
        expect_q(x, "X")?;
        expect_params(cx, 1, Some(2), x.dtype, "X")?;
        expect_params(cx, 3, Some(4), x.dtype, "Y")?;
        norm_axis(self.axis, x.rank())?;
        Ok(vec![x.clone()])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let (xs, _) = params(inputs, 1, 2)?;
        let (ys, yz) = params(inputs, 3, 4)?;
        let r = range(x.dtype())?;
        let shape = x.shape();
        // Rows of length d, `inner` apart element to element, `outer` x `inner` of them.
        let (d, inner) = self.rows(shape)?;
        let xv = ints(x)?;
        let mut y = vec![0i32; xv.len()];
        let outer = xv.len().checked_div(d * inner).unwrap_or(0);
        let table = QLinearSoftmax::exps(xs, d);
        let yse = (1.0f32 / ys).floor();
        for o in 0..outer {
            for i in 0..inner {
                let idx = |k: usize| (o * d + k) * inner + i;
                let m = (0..d).map(|k| xv[idx(k)]).max().unwrap_or(0);
                let v: Vec<f32> = (0..d).map(|k| table[(m - xv[idx(k)]) as usize]).collect();
                let sum = v.iter().fold(0f32, |s, &e| s + e);
                let scale = (1.0f32 / sum) * yse;
                for k in 0..d {
                    y[idx(k)] = saturate(v[k] * scale + yz as f32, r);
                }
            }
        }
        Ok(vec![tensor_of(x.dtype(), shape.to_vec(), &y)?])
    }
    fn attrs(&self) -> AttrList {
        vec![("axis", AttrValue::Int(self.axis)), ("opset", AttrValue::Int(self.opset))]
    }
}

/// QGemm: inputs A, a_scale, a_zero_point, B, b_scale, b_zero_point, C? (i32 bias), y_scale?,
/// y_zero_point?; `alpha`, `transA`, `transB`. `acc = C + sum (a - za)(b - zb[n])` in i32
/// (wrapping), `scale[n] = ((alpha * sa) * sb[n])` then `/ ys` when y_scale is given, all f32;
/// `f32(acc) * scale[n]` is the output when y_zero_point is absent (f32), else it is rounded
/// half to even, plus `yz`, saturated to y_zero_point's type (NaN gives the low end).
#[derive(Clone, Debug, PartialEq)]
pub struct QGemm {
    pub alpha: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

impl QGemm {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::QGemm(QGemm {
            alpha: a.float("alpha", 1.0)?,
            trans_a: a.int("transA", 0)? != 0,
            trans_b: a.int("transB", 0)? != 0,
        }))
    }

    /// (M, K, N) from A's and B's dims, as Gemm's.
    fn dims(&self, a: &[Dim], b: &[Dim]) -> Result<(Dim, Dim, Dim), OpError> {
        let gemm = crate::ops::Gemm { alpha: self.alpha, beta: 1.0, trans_a: self.trans_a, trans_b: self.trans_b };
        gemm.dims(a, b)
    }
}

impl OpDef for QGemm {
    fn name(&self) -> &'static str {
        "QGemm"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(6, 9)?;
        let (a, b) = (cx.ty(0)?, cx.ty(3)?);
        expect_q(a, "A")?;
        expect_q(b, "B")?;
        let (m, _, n) = self.dims(&a.shape, &b.shape)?;
        expect_params(cx, 1, Some(2), a.dtype, "A")?;
        let (bs, bz) = (cx.ty(4)?, cx.ty(5)?);
        let per_col =
            |t: &TensorType| t.rank() == 0 || (t.rank() == 1 && (t.shape[0] == Dim::Known(1) || t.shape[0] == n));
        if bs.dtype != DType::F32 || !per_col(bs) || !per_col(bz) || bs.shape != bz.shape {
            invalid!("B's scale {bs} and zero point {bz} must be alike: one value or one per column ({n})");
        }
        if bz.dtype != b.dtype {
            invalid!("B's zero point is {} but B is {}", bz.dtype, b.dtype);
        }
        if let Some(c) = cx.opt_ty(6) {
            if c.dtype != DType::I32 {
                invalid!("C {c} must be i32");
            }
            if c.rank() > 2 {
                invalid!("C {c} must broadcast to [{m},{n}]");
            }
            broadcast_shapes(&c.shape, &[m.clone(), n.clone()])?;
        }
        if let Some(s) = cx.opt_ty(7)
            && (s.dtype != DType::F32 || s.numel() != Some(1))
        {
            invalid!("y_scale {s} must be one f32");
        }
        let out = match cx.opt_ty(8) {
            Some(z) => {
                if cx.opt_ty(7).is_none() {
                    invalid!("a y_zero_point needs a y_scale");
                }
                expect_q(z, "y_zero_point")?;
                z.dtype
            }
            None => DType::F32,
        };
        Ok(vec![TensorType::new(out, vec![m, n])])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 3)?);
        let (sa, za) = params(inputs, 1, 2)?;
        let sb: Vec<f32> = input(inputs, 4)?.view::<f32>()?.into_owned();
        let zb = ints(input(inputs, 5)?)?;
        let (av, bv) = (ints(a)?, ints(b)?);
        let (m, k) = if self.trans_a { (a.shape()[1], a.shape()[0]) } else { (a.shape()[0], a.shape()[1]) };
        let n = if self.trans_b { b.shape()[0] } else { b.shape()[1] };
        let at = |i: usize, p: usize| if self.trans_a { av[p * m + i] } else { av[i * k + p] };
        let bt = |p: usize, j: usize| if self.trans_b { bv[j * k + p] } else { bv[p * n + j] };
        let per = |v: usize, j: usize| if v == 1 { 0 } else { j };
        let bias = match opt_input(inputs, 6) {
            Some(c) => {
                let offs = broadcast_offsets(c.shape(), &[m, n]);
                let cv = ints(c)?;
                offs.iter().map(|&o| cv[o]).collect()
            }
            None => vec![0; m * n],
        };
        let ys = match opt_input(inputs, 7) {
            Some(s) => Some(s.view::<f32>()?[0]),
            None => None,
        };
        let zero = opt_input(inputs, 8);
        let scale: Vec<f32> = (0..n)
            .map(|j| {
                let s = (self.alpha * sa) * sb[per(sb.len(), j)];
                ys.map_or(s, |y| s / y)
            })
            .collect();
        let mut x = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let zbj = zb[per(zb.len(), j)];
                let mut acc = bias[i * n + j];
                for p in 0..k {
                    acc = acc.wrapping_add((at(i, p) - za).wrapping_mul(bt(p, j) - zbj));
                }
                x[i * n + j] = acc as f32 * scale[j];
            }
        }
        Ok(vec![match zero {
            None => Tensor::from_vec(vec![m, n], x),
            Some(z) => {
                let yz = z.to_i64s()?[0] as i32;
                let r = range(z.dtype())?;
                let q: Vec<i32> = x.iter().map(|&v| saturate(v.round_ties_even() + yz as f32, r)).collect();
                tensor_of(z.dtype(), vec![m, n], &q)?
            }
        }])
    }
    fn attrs(&self) -> AttrList {
        vec![
            ("alpha", AttrValue::Float(self.alpha)),
            ("transA", AttrValue::Int(self.trans_a as i64)),
            ("transB", AttrValue::Int(self.trans_b as i64)),
        ]
    }
    fn macs(&self, inputs: &[Option<&TensorType>], outputs: &[TensorType]) -> u64 {
        let (Some(Some(a)), Some(o)) = (inputs.first(), outputs.first()) else { return 0 };
        let k = if self.trans_a { a.shape.first() } else { a.shape.get(1) };
        (o.numel().unwrap_or(0) * k.and_then(Dim::known).unwrap_or(0)) as u64
    }
}
