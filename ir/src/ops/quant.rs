//! Quantized tensors: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, and the integer
//! convolutions and matrix products (QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger).
//!
//! An integer `q` of a quantized tensor stands for `scale * (q - zero_point)`; the scale and
//! zero point hold for the whole tensor, or for each index along one axis (per channel).
//!
//! The arithmetic is the one ONNX Runtime's CPU kernels perform, in the same float types, so
//! that a quantized model gives the integers ONNX Runtime gives:
//! - quantizing divides by the scale in f32, rounds half to even, adds the zero point and
//!   saturates to the integer type (NaN, which ONNX leaves undefined, gives the type's low end);
//! - dequantizing converts `q - zero_point` (an i32) to f32 and multiplies by the scale;
//! - the integer products sum exactly in i32 (two's-complement wrap beyond it, as i32 hardware
//!   does), and requantising converts that sum to f32, multiplies it by
//!   `(input_scale * weight_scale) / output_scale` (computed in f32, in that order), rounds half
//!   to even, adds the output zero point and saturates.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::dtype::DType;
use crate::error::OpError;
use crate::invalid;
use crate::ops::conv::{Conv, ConvInputs};
use crate::ops::matmul::MatMul;
use crate::ops::{InferCx, Op, OpDef, input, norm_axis, opt_input};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

/// The range of a quantized integer type, or `None` for types that cannot hold quantized values.
pub fn qrange(d: DType) -> Option<(i32, i32)> {
    Some(match d {
        DType::I8 => (-128, 127),
        DType::U8 => (0, 255),
        DType::I16 => (-32768, 32767),
        DType::U16 => (0, 65535),
        _ => return None,
    })
}

/// An f32 rounded half to even and saturated to `(lo, hi)`; NaN gives the low end (ONNX leaves
/// it undefined; ONNX Runtime's conversion does this).
pub fn saturate(v: f32, (lo, hi): (i32, i32)) -> i32 {
    if v.is_nan() {
        return lo;
    }
    // `as` saturates infinities.
    (v.round_ties_even() as i32).clamp(lo, hi)
}

/// Quantizes one value: `x / scale` rounded half to even, plus the zero point, saturated.
pub fn quantize(x: f32, scale: f32, zero: i32, range: (i32, i32)) -> i32 {
    saturate((x / scale).round_ties_even() + zero as f32, range)
}

/// Requantises an i32 sum: `acc * multiplier` in f32, rounded half to even, plus the zero
/// point, saturated (NaN, from a NaN or infinite multiplier, gives the low end).
pub fn requantize(acc: i32, multiplier: f32, zero: i32, range: (i32, i32)) -> i32 {
    saturate((acc as f32 * multiplier).round_ties_even() + zero as f32, range)
}

/// Integer elements of a quantized tensor (or a zero point) as i32.
pub(crate) fn ints(t: &Tensor) -> Result<Vec<i32>, OpError> {
    Ok(t.to_i64s()?.into_iter().map(|v| v as i32).collect())
}

pub(crate) fn tensor_of(dtype: DType, shape: Vec<usize>, v: &[i32]) -> Result<Tensor, OpError> {
    Ok(match dtype {
        DType::I8 => Tensor::from_vec(shape, v.iter().map(|&x| x as i8).collect::<Vec<_>>()),
        DType::U8 => Tensor::from_vec(shape, v.iter().map(|&x| x as u8).collect::<Vec<_>>()),
        DType::I16 => Tensor::from_vec(shape, v.iter().map(|&x| x as i16).collect::<Vec<_>>()),
        DType::U16 => Tensor::from_vec(shape, v.iter().map(|&x| x as u16).collect::<Vec<_>>()),
        DType::I32 => Tensor::from_vec(shape, v.to_vec()),
        d => return Err(OpError::Unsupported(format!("quantized values of type {d}"))),
    })
}

/// Whether a scale or zero point of this type is one value for the whole tensor: a scalar or a
/// one-element vector (ONNX Runtime treats both alike).
fn is_per_tensor(ty: &TensorType) -> bool {
    ty.rank() == 0 || (ty.rank() == 1 && ty.shape[0] == Dim::Known(1))
}

/// Checks a scale (f32) and its optional zero point: per tensor, or a vector of `len` values
/// when `len` is given (per axis). Returns the zero point's type.
fn check_params(
    scale: &TensorType,
    zero: Option<&TensorType>,
    per_axis: Option<&Dim>,
    what: &str,
) -> Result<Option<DType>, OpError> {
    if scale.dtype != DType::F32 {
        return Err(OpError::Unsupported(format!("{what} scale of type {} (only f32)", scale.dtype)));
    }
    let shape_ok = |ty: &TensorType| {
        is_per_tensor(ty) || per_axis.is_some_and(|d| ty.rank() == 1 && (&ty.shape[0] == d || d.known().is_none()))
    };
    let expect = match per_axis {
        Some(d) => format!("a scalar or a vector of {d} values"),
        None => "a scalar".to_string(),
    };
    if !shape_ok(scale) {
        invalid!("{what} scale {scale} must be {expect}");
    }
    let Some(z) = zero else { return Ok(None) };
    if !shape_ok(z) || (is_per_tensor(z) != is_per_tensor(scale) && z.shape != scale.shape) {
        invalid!("{what} zero point {z} must be {expect}, like its scale {scale}");
    }
    Ok(Some(z.dtype))
}

/// A scale and zero point read at evaluation time, per tensor or per index along `axis`.
struct Params {
    scale: Vec<f32>,
    zero: Vec<i32>,
}

impl Params {
    fn read(scale: &Tensor, zero: Option<&Tensor>) -> Result<Params, OpError> {
        let scale: Vec<f32> = scale.view::<f32>()?.into_owned();
        let zero = match zero {
            Some(z) => ints(z)?,
            None => vec![0; scale.len()],
        };
        if zero.len() != scale.len() {
            invalid!("{} zero points for {} scales", zero.len(), scale.len());
        }
        Ok(Params { scale, zero })
    }

    /// The index into the parameters of every element of a tensor of `shape` (per axis: its
    /// coordinate along `axis`).
    fn index(&self, shape: &[usize], axis: usize) -> Result<impl Fn(usize) -> usize + use<>, OpError> {
        let n = self.scale.len();
        let per_axis = n != 1;
        let (dim, inner) = if per_axis { (shape[axis], shape[axis + 1..].iter().product::<usize>()) } else { (1, 1) };
        if per_axis && n != dim {
            invalid!("{n} scales along axis {axis} of size {dim}");
        }
        Ok(move |i: usize| if per_axis { (i / inner) % dim } else { 0 })
    }
}

/// The axis and block attributes QuantizeLinear and DequantizeLinear share.
fn quant_attrs(a: &mut Attrs) -> Result<i64, OpError> {
    let axis = a.int("axis", 1)?;
    if a.int("block_size", 0)? != 0 {
        return Err(OpError::Unsupported("blocked quantization (block_size > 0)".into()));
    }
    Ok(axis)
}

/// The axis along which per-axis parameters apply, checked against the rank (a per-tensor
/// scale does not need one, as in ONNX Runtime).
fn param_axis(axis: i64, x: &TensorType, scale: &TensorType) -> Result<Option<Dim>, OpError> {
    if is_per_tensor(scale) {
        return Ok(None);
    }
    let ax = norm_axis(axis, x.rank())?;
    Ok(Some(x.shape[ax].clone()))
}

/// `y = saturate(round(x / scale) + zero_point)`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizeLinear {
    pub axis: i64,
    /// The output type: the zero point's, or `output_dtype`, or u8 when neither is given.
    pub to: Option<DType>,
}

impl QuantizeLinear {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let axis = quant_attrs(a)?;
        // Only float8 outputs saturate optionally; incept holds no float8.
        a.ignore("saturate");
        let to = match a.int("output_dtype", 0)? {
            0 => None,
            code => Some(DType::from_onnx(code as i32).filter(|d| qrange(*d).is_some()).ok_or_else(|| {
                OpError::Unsupported(format!("QuantizeLinear to {}", DType::onnx_code_name(code as i32)))
            })?),
        };
        if a.int("precision", 0)? != 0 {
            return Err(OpError::Unsupported("QuantizeLinear with a precision attribute".into()));
        }
        Ok(Op::QuantizeLinear(QuantizeLinear { axis, to }))
    }
}

impl OpDef for QuantizeLinear {
    fn name(&self) -> &'static str {
        "QuantizeLinear"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 3)?;
        let (x, scale) = (cx.ty(0)?, cx.ty(1)?);
        if x.dtype != DType::F32 {
            return Err(OpError::Unsupported(format!("QuantizeLinear of a {} input (only f32)", x.dtype)));
        }
        let per_axis = param_axis(self.axis, x, scale)?;
        let zero = check_params(scale, cx.opt_ty(2), per_axis.as_ref(), "output")?;
        let to = match (zero, self.to) {
            (Some(z), Some(t)) if z != t => invalid!("the zero point is {z} but output_dtype says {t}"),
            (Some(z), _) => z,
            (None, t) => t.unwrap_or(DType::U8),
        };
        if qrange(to).is_none() {
            return Err(OpError::Unsupported(format!("quantizing to {to} (only i8, u8, i16, u16)")));
        }
        self.to = Some(to);
        Ok(vec![TensorType::new(to, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let zero = opt_input(inputs, 2);
        let to = zero.map(|z| z.dtype()).or(self.to).unwrap_or(DType::U8);
        let range = qrange(to).ok_or_else(|| OpError::Unsupported(format!("quantizing to {to}")))?;
        let p = Params::read(input(inputs, 1)?, zero)?;
        let axis = if p.scale.len() == 1 { 0 } else { norm_axis(self.axis, x.rank())? };
        let at = p.index(x.shape(), axis)?;
        let xv = x.view::<f32>()?;
        let q: Vec<i32> =
            xv.iter().enumerate().map(|(i, &v)| quantize(v, p.scale[at(i)], p.zero[at(i)], range)).collect();
        Ok(vec![tensor_of(to, x.shape().to_vec(), &q)?])
    }
    fn attrs(&self) -> AttrList {
        let mut out = vec![("axis", AttrValue::Int(self.axis))];
        if let Some(t) = self.to {
            out.push(("output_dtype", AttrValue::Int(t as i64)));
        }
        out
    }
}

/// `y = (x - zero_point) * scale`, in f32.
#[derive(Clone, Debug, PartialEq)]
pub struct DequantizeLinear {
    pub axis: i64,
}

impl DequantizeLinear {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let axis = quant_attrs(a)?;
        match a.int("output_dtype", 0)? {
            0 | 1 => {}
            code => {
                return Err(OpError::Unsupported(format!(
                    "DequantizeLinear to {} (only f32)",
                    DType::onnx_code_name(code as i32)
                )));
            }
        }
        Ok(Op::DequantizeLinear(DequantizeLinear { axis }))
    }
}

impl OpDef for DequantizeLinear {
    fn name(&self) -> &'static str {
        "DequantizeLinear"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 3)?;
        let (x, scale) = (cx.ty(0)?, cx.ty(1)?);
        if qrange(x.dtype).is_none() && x.dtype != DType::I32 {
            return Err(OpError::Unsupported(format!(
                "DequantizeLinear of a {} input (only i8, u8, i16, u16, i32)",
                x.dtype
            )));
        }
        let per_axis = param_axis(self.axis, x, scale)?;
        if let Some(z) = check_params(scale, cx.opt_ty(2), per_axis.as_ref(), "input")?
            && z != x.dtype
        {
            invalid!("the zero point is {z} but the input is {}", x.dtype);
        }
        Ok(vec![TensorType::new(DType::F32, x.shape.clone())])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let p = Params::read(input(inputs, 1)?, opt_input(inputs, 2))?;
        if x.dtype() == DType::I32 && p.zero.iter().any(|&z| z != 0) {
            invalid!("an i32 input takes no zero point other than 0");
        }
        let axis = if p.scale.len() == 1 { 0 } else { norm_axis(self.axis, x.rank())? };
        let at = p.index(x.shape(), axis)?;
        let y: Vec<f32> = ints(x)?
            .into_iter()
            .enumerate()
            .map(|(i, q)| q.wrapping_sub(p.zero[at(i)]) as f32 * p.scale[at(i)])
            .collect();
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), y)])
    }
    fn attrs(&self) -> AttrList {
        vec![("axis", AttrValue::Int(self.axis))]
    }
}

/// u8 quantization with a scale and zero point computed from the input's range (which always
/// includes 0): `scale = (max - min) / 255`, `zero_point = saturate(round(-min / scale))`.
#[derive(Clone, Debug, PartialEq)]
pub struct DynamicQuantizeLinear;

impl DynamicQuantizeLinear {
    pub fn build(_: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::DynamicQuantizeLinear(DynamicQuantizeLinear))
    }

    /// The scale and zero point of values whose range (extended to 0) is `lo..=hi`. An all-zero
    /// input gives scale 1 and zero point 0, as ONNX Runtime (ONNX's formula divides by 0 there).
    pub fn params(lo: f32, hi: f32) -> (f32, i32) {
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let scale = if hi == lo { 1.0 } else { (hi - lo) / 255.0 };
        let zero = (0.0 - lo / scale).clamp(0.0, 255.0).round_ties_even();
        (scale, zero as i32)
    }
}

impl OpDef for DynamicQuantizeLinear {
    fn name(&self) -> &'static str {
        "DynamicQuantizeLinear"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let x = cx.ty(0)?;
        if x.dtype != DType::F32 {
            return Err(OpError::Unsupported(format!("DynamicQuantizeLinear of a {} input (only f32)", x.dtype)));
        }
        Ok(vec![
            TensorType::new(DType::U8, x.shape.clone()),
            TensorType::known(DType::F32, &[]),
            TensorType::known(DType::U8, &[]),
        ])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let xv = x.view::<f32>()?;
        // NaNs take no part in the range (f32::min and max skip them).
        let lo = xv.iter().fold(0f32, |m, &v| m.min(v));
        let hi = xv.iter().fold(0f32, |m, &v| m.max(v));
        let (scale, zero) = DynamicQuantizeLinear::params(lo, hi);
        let q: Vec<i32> = xv.iter().map(|&v| quantize(v, scale, zero, (0, 255))).collect();
        Ok(vec![tensor_of(DType::U8, x.shape().to_vec(), &q)?, Tensor::scalar(scale), Tensor::scalar(zero as u8)])
    }
}

/// An input of the integer convs and MatMuls: u8 or i8.
fn expect_int8(ty: &TensorType, what: &str) -> Result<(), OpError> {
    match ty.dtype {
        DType::U8 | DType::I8 => Ok(()),
        d => Err(OpError::Unsupported(format!("{what} of type {d} (only u8 and i8)"))),
    }
}

/// A zero point's type must be its tensor's.
fn zero_type(zero: Option<&TensorType>, of: &TensorType, what: &str) -> Result<(), OpError> {
    if let Some(z) = zero
        && z.dtype != of.dtype
    {
        invalid!("{what} zero point is {} but {what} is {}", z.dtype, of.dtype);
    }
    Ok(())
}

/// A zero point per tensor, or a vector of `n` (per output channel or column).
fn check_zero_shape(z: Option<&TensorType>, n: usize, what: &str) -> Result<(), OpError> {
    if let Some(z) = z
        && !is_per_tensor(z)
        && z.shape != [Dim::Known(n)]
    {
        invalid!("{what} zero point {z} must be a scalar or a vector of {n} values");
    }
    Ok(())
}

/// `v - zero` in f64, the zero point per tensor or per index `at(i)`.
fn centered(v: &Tensor, zero: &[i32], at: impl Fn(usize) -> usize) -> Result<Vec<f64>, OpError> {
    Ok(ints(v)?.into_iter().enumerate().map(|(i, q)| (q - zero[at(i)]) as f64).collect())
}

/// Zero points as i32 (absent: 0).
fn zeros(z: Option<&Tensor>) -> Result<Vec<i32>, OpError> {
    match z {
        Some(z) => ints(z),
        None => Ok(vec![0]),
    }
}

/// The exact f64 sums as i32, wrapping as i32 arithmetic does.
fn wrap_i32(v: &[f64]) -> Vec<i32> {
    v.iter().map(|&s| s as i64 as i32).collect()
}

/// Checks a weight zero point given per tensor or per output channel (dim 0 of the weights).
fn weight_zero_index(zero: &[i32], m: usize, per: usize) -> Result<impl Fn(usize) -> usize + use<>, OpError> {
    let per_channel = zero.len() != 1;
    if per_channel && zero.len() != m {
        invalid!("{} weight zero points for {m} output channels", zero.len());
    }
    Ok(move |i: usize| if per_channel { i / per } else { 0 })
}

/// The integer conv both QLinearConv and ConvInteger compute: `x - x_zero` by `w - w_zero`,
/// summed exactly (plus an i32 bias), as i32.
fn integer_conv(
    conv: &Conv,
    x: &Tensor,
    xz: &[i32],
    w: &Tensor,
    wz: &[i32],
    bias: Option<&Tensor>,
) -> Result<(Vec<i32>, Vec<usize>), OpError> {
    if xz.len() != 1 {
        invalid!("the input zero point must be one value, found {}", xz.len());
    }
    let ws = w.shape();
    let m = ws[0];
    let per: usize = ws[1..].iter().product();
    let wat = weight_zero_index(wz, m, per)?;
    let xv = centered(x, xz, |_| 0)?;
    let wv = centered(w, wz, wat)?;
    let bv = match bias {
        Some(b) => b.to_f64s()?,
        None => vec![0.0; m],
    };
    let (out, shape) = conv.sums(&xv, x.shape(), &wv, ws, &bv)?;
    Ok((wrap_i32(&out), shape))
}

/// Convolution of quantized tensors with a quantized output: inputs x, x_scale, x_zero_point,
/// w, w_scale, w_zero_point, y_scale, y_zero_point, optional i32 bias (in units of
/// `x_scale * w_scale`). Weight scales and zero points per tensor or per output channel.
///
/// `clamp` is incept's own extension (attribute `incept_clamp = [lo, hi]`, written by the
/// `fuse-qdq` pass for a Relu or Clip between a QDQ conv and its QuantizeLinear): the output
/// saturates to `[lo, hi]` within its type's range instead of to the whole range. Clamping
/// after quantising is what quantising the clipped value gives, because quantising is
/// increasing: `Q(clip(y, a, b)) = clip(Q(y), Q(a), Q(b))`.
#[derive(Clone, Debug, PartialEq)]
pub struct QLinearConv {
    pub conv: Conv,
    pub clamp: Option<(i32, i32)>,
}

impl QLinearConv {
    pub const CLAMP_ATTR: &'static str = "incept_clamp";

    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let clamp = match a.opt_ints(Self::CLAMP_ATTR)? {
            None => None,
            Some(v) if v.len() == 2 && v[0] <= v[1] && v.iter().all(|&b| i32::try_from(b).is_ok()) => {
                Some((v[0] as i32, v[1] as i32))
            }
            Some(v) => invalid!("{} must be two integers [lo, hi] with lo <= hi, not {v:?}", Self::CLAMP_ATTR),
        };
        match Conv::build(a)? {
            Op::Conv(conv) => Ok(Op::QLinearConv(QLinearConv { conv, clamp })),
            _ => unreachable!("Conv::build builds a Conv"),
        }
    }

    /// The range the output saturates to: its type's, narrowed by `clamp`; None for a type that
    /// is not quantized or a clamp outside the type's range.
    pub fn out_range(&self, y_type: DType) -> Option<(i32, i32)> {
        let (lo, hi) = qrange(y_type)?;
        match self.clamp {
            None => Some((lo, hi)),
            Some((a, b)) => (a.max(lo) <= b.min(hi)).then_some((a.max(lo), b.min(hi))),
        }
    }
}

impl OpDef for QLinearConv {
    fn name(&self) -> &'static str {
        "QLinearConv"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(8, 9)?;
        let (x, w) = (cx.ty(0)?, cx.ty(3)?);
        expect_int8(x, "input")?;
        expect_int8(w, "weights")?;
        let inputs = ConvInputs::shapes(x, w, &mut self.conv.window)?;
        let m = inputs.ws[0];
        let y_zero = cx.ty(7)?;
        expect_int8(y_zero, "output zero point")?;
        check_params(cx.ty(1)?, cx.opt_ty(2), None, "input")?;
        check_params(cx.ty(4)?, cx.opt_ty(5), Some(&Dim::Known(m)), "weight")?;
        check_params(cx.ty(6)?, Some(y_zero), None, "output")?;
        zero_type(cx.opt_ty(2), x, "input")?;
        zero_type(cx.opt_ty(5), w, "weights")?;
        if self.out_range(y_zero.dtype).is_none() {
            invalid!("{} {:?} leaves no {} output value", Self::CLAMP_ATTR, self.clamp, y_zero.dtype);
        }
        let bias = cx.opt_ty(8);
        if let Some(b) = bias
            && b.dtype != DType::I32
        {
            invalid!("bias {b} must be i32");
        }
        let shape = self.conv.output_shape(&inputs, bias)?;
        Ok(vec![TensorType::new(y_zero.dtype, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 3)?);
        let xp = Params::read(input(inputs, 1)?, opt_input(inputs, 2))?;
        let wp = Params::read(input(inputs, 4)?, opt_input(inputs, 5))?;
        let yp = Params::read(input(inputs, 6)?, opt_input(inputs, 7))?;
        let yt = input(inputs, 7)?.dtype();
        let (acc, shape) = integer_conv(&self.conv, x, &xp.zero, w, &wp.zero, opt_input(inputs, 8))?;
        let m = shape[1];
        let plane: usize = shape[2..].iter().product();
        let multipliers = multipliers(xp.scale[0], &wp.scale, yp.scale[0], m)?;
        let range = self.out_range(yt).ok_or_else(|| OpError::Unsupported(format!("outputs of type {yt}")))?;
        let q: Vec<i32> = acc
            .iter()
            .enumerate()
            .map(|(i, &s)| requantize(s, multipliers[(i / plane.max(1)) % m], yp.zero[0], range))
            .collect();
        Ok(vec![tensor_of(yt, shape, &q)?])
    }
    fn attrs(&self) -> AttrList {
        let mut out = self.conv.attrs();
        if let Some((lo, hi)) = self.clamp {
            out.push((Self::CLAMP_ATTR, AttrValue::Ints(vec![lo as i64, hi as i64])));
        }
        out
    }
    fn macs(&self, inputs: &[Option<&TensorType>], outputs: &[TensorType]) -> u64 {
        self.conv.macs(&[inputs.first().copied().flatten(), inputs.get(3).copied().flatten()], outputs)
    }
}

/// `(x_scale * w_scale[j]) / y_scale` in f32 for each of `n` outputs (per tensor: one repeated).
fn multipliers(xs: f32, ws: &[f32], ys: f32, n: usize) -> Result<Vec<f32>, OpError> {
    if ws.len() != 1 && ws.len() != n {
        invalid!("{} weight scales for {n} outputs", ws.len());
    }
    Ok((0..n).map(|j| (xs * ws[if ws.len() == 1 { 0 } else { j }]) / ys).collect())
}

/// Convolution of integer tensors to an i32 output: inputs x, w, optional x_zero_point (one
/// value) and w_zero_point (per tensor or per output channel).
#[derive(Clone, Debug, PartialEq)]
pub struct ConvInteger {
    pub conv: Conv,
}

impl ConvInteger {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        match Conv::build(a)? {
            Op::Conv(conv) => Ok(Op::ConvInteger(ConvInteger { conv })),
            _ => unreachable!("Conv::build builds a Conv"),
        }
    }
}

impl OpDef for ConvInteger {
    fn name(&self) -> &'static str {
        "ConvInteger"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 4)?;
        let (x, w) = (cx.ty(0)?, cx.ty(1)?);
        expect_int8(x, "input")?;
        expect_int8(w, "weights")?;
        let inputs = ConvInputs::shapes(x, w, &mut self.conv.window)?;
        let m = inputs.ws[0];
        zero_type(cx.opt_ty(2), x, "input")?;
        zero_type(cx.opt_ty(3), w, "weights")?;
        check_zero_shape(cx.opt_ty(2), 1, "input")?;
        check_zero_shape(cx.opt_ty(3), m, "weight")?;
        let shape = self.conv.output_shape(&inputs, None)?;
        Ok(vec![TensorType::new(DType::I32, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let (xz, wz) = (zeros(opt_input(inputs, 2))?, zeros(opt_input(inputs, 3))?);
        let (acc, shape) = integer_conv(&self.conv, x, &xz, w, &wz, None)?;
        Ok(vec![Tensor::from_vec(shape, acc)])
    }
    fn attrs(&self) -> AttrList {
        self.conv.attrs()
    }
    fn macs(&self, inputs: &[Option<&TensorType>], outputs: &[TensorType]) -> u64 {
        self.conv.macs(inputs, outputs)
    }
}

/// The integer MatMul both QLinearMatMul and MatMulInteger compute: `a - a_zero` (per tensor
/// or per row) by `b - b_zero` (per tensor or per column), summed exactly, as i32.
fn integer_matmul(a: &Tensor, az: &[i32], b: &Tensor, bz: &[i32]) -> Result<(Vec<i32>, Vec<usize>), OpError> {
    let m = if a.rank() >= 2 { a.shape()[a.rank() - 2] } else { 1 };
    let k = *a.shape().last().unwrap_or(&1);
    let n = if b.rank() >= 2 { b.shape()[b.rank() - 1] } else { 1 };
    if az.len() != 1 && az.len() != m {
        invalid!("{} zero points for A's {m} rows", az.len());
    }
    if bz.len() != 1 && bz.len() != n {
        invalid!("{} zero points for B's {n} columns", bz.len());
    }
    let av = centered(a, az, |i| if az.len() == 1 { 0 } else { (i / k.max(1)) % m })?;
    let bv = centered(b, bz, |i| if bz.len() == 1 { 0 } else { i % n })?;
    let (out, shape) = MatMul::sums(&av, a.shape(), &bv, b.shape())?;
    Ok((wrap_i32(&out), shape))
}

/// The output type of an integer MatMul's operands, with the shapes of its zero points checked.
fn integer_matmul_shape(a: &TensorType, b: &TensorType) -> Result<(Vec<Dim>, Dim, Dim), OpError> {
    expect_int8(a, "A")?;
    expect_int8(b, "B")?;
    let shape = MatMul::output_shape(&a.shape, &b.shape)?;
    let rows = if a.rank() >= 2 { a.shape[a.rank() - 2].clone() } else { Dim::Known(1) };
    let cols = if b.rank() >= 2 { b.shape[b.rank() - 1].clone() } else { Dim::Known(1) };
    Ok((shape, rows, cols))
}

/// A zero point or scale per tensor, or a vector along `dim`.
fn check_vector(t: Option<&TensorType>, dim: &Dim, what: &str) -> Result<(), OpError> {
    if let Some(t) = t
        && !is_per_tensor(t)
        && !(t.rank() == 1 && &t.shape[0] == dim)
    {
        invalid!("{what} {t} must be a scalar or a vector of {dim} values");
    }
    Ok(())
}

/// Matrix product of quantized tensors with a quantized output: inputs a, a_scale,
/// a_zero_point, b, b_scale, b_zero_point, y_scale, y_zero_point; B's scale and zero point
/// per tensor or per column.
#[derive(Clone, Debug, PartialEq)]
pub struct QLinearMatMul;

impl QLinearMatMul {
    pub fn build(_: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::QLinearMatMul(QLinearMatMul))
    }
}

impl OpDef for QLinearMatMul {
    fn name(&self) -> &'static str {
        "QLinearMatMul"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(8, 8)?;
        let (a, b) = (cx.ty(0)?, cx.ty(3)?);
        let (shape, _, cols) = integer_matmul_shape(a, b)?;
        let y_zero = cx.ty(7)?;
        expect_int8(y_zero, "output zero point")?;
        check_params(cx.ty(1)?, cx.opt_ty(2), None, "A")?;
        check_params(cx.ty(4)?, None, Some(&cols), "B")?;
        check_vector(cx.opt_ty(5), &cols, "B zero point")?;
        check_params(cx.ty(6)?, Some(y_zero), None, "output")?;
        zero_type(cx.opt_ty(2), a, "A")?;
        zero_type(cx.opt_ty(5), b, "B")?;
        Ok(vec![TensorType::new(y_zero.dtype, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 3)?);
        let ap = Params::read(input(inputs, 1)?, opt_input(inputs, 2))?;
        let bscale: Vec<f32> = input(inputs, 4)?.view::<f32>()?.into_owned();
        let bz = zeros(opt_input(inputs, 5))?;
        let yp = Params::read(input(inputs, 6)?, opt_input(inputs, 7))?;
        let yt = input(inputs, 7)?.dtype();
        let (acc, shape) = integer_matmul(a, &ap.zero, b, &bz)?;
        let n = if b.rank() >= 2 { b.shape()[b.rank() - 1] } else { 1 };
        let multipliers = multipliers(ap.scale[0], &bscale, yp.scale[0], n)?;
        let range = qrange(yt).ok_or_else(|| OpError::Unsupported(format!("outputs of type {yt}")))?;
        let q: Vec<i32> =
            acc.iter().enumerate().map(|(i, &s)| requantize(s, multipliers[i % n], yp.zero[0], range)).collect();
        Ok(vec![tensor_of(yt, shape, &q)?])
    }
    fn macs(&self, inputs: &[Option<&TensorType>], outputs: &[TensorType]) -> u64 {
        MatMul.macs(inputs, outputs)
    }
}

/// Matrix product of integer tensors to an i32 output: inputs a, b, optional a_zero_point (per
/// tensor or per row) and b_zero_point (per tensor or per column).
#[derive(Clone, Debug, PartialEq)]
pub struct MatMulInteger;

impl MatMulInteger {
    pub fn build(_: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::MatMulInteger(MatMulInteger))
    }
}

impl OpDef for MatMulInteger {
    fn name(&self) -> &'static str {
        "MatMulInteger"
    }
    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 4)?;
        let (a, b) = (cx.ty(0)?, cx.ty(1)?);
        let (shape, rows, cols) = integer_matmul_shape(a, b)?;
        zero_type(cx.opt_ty(2), a, "A")?;
        zero_type(cx.opt_ty(3), b, "B")?;
        check_vector(cx.opt_ty(2), &rows, "A zero point")?;
        check_vector(cx.opt_ty(3), &cols, "B zero point")?;
        Ok(vec![TensorType::new(DType::I32, shape)])
    }
    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        let (az, bz) = (zeros(opt_input(inputs, 2))?, zeros(opt_input(inputs, 3))?);
        let (acc, shape) = integer_matmul(a, &az, b, &bz)?;
        Ok(vec![Tensor::from_vec(shape, acc)])
    }
    fn macs(&self, inputs: &[Option<&TensorType>], outputs: &[TensorType]) -> u64 {
        MatMul.macs(inputs, outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_half_to_even_and_saturates() {
        let r = qrange(DType::U8).unwrap();
        assert_eq!(quantize(2.5, 1.0, 0, r), 2);
        assert_eq!(quantize(3.5, 1.0, 0, r), 4);
        assert_eq!(quantize(-0.5, 1.0, 10, r), 10);
        assert_eq!(quantize(1000.0, 1.0, 0, r), 255);
        assert_eq!(quantize(-3.0, 1.0, 0, r), 0);
        assert_eq!(quantize(f32::NAN, 1.0, 7, r), 0);
        assert_eq!(quantize(f32::NAN, 1.0, 7, qrange(DType::I8).unwrap()), -128);
        let s = qrange(DType::I8).unwrap();
        assert_eq!(quantize(-1000.0, 0.5, 0, s), -128);
        assert_eq!(quantize(f32::INFINITY, 0.5, 0, s), 127);
        assert_eq!(requantize(5, 0.5, -3, s), -1); // 2.5 -> 2, + (-3)
        assert_eq!(requantize(7, 0.5, 0, s), 4); // 3.5 -> 4
    }

    #[test]
    fn dynamic_parameters_include_zero() {
        assert_eq!(DynamicQuantizeLinear::params(1.0, 2.0), (2.0 / 255.0, 0));
        let (s, z) = DynamicQuantizeLinear::params(-1.0, 1.0);
        assert_eq!(s, 2.0 / 255.0);
        // 1 / (2 / 255) is 127.49999 in f32 (ONNX Runtime computes it the same way).
        assert_eq!(z, 127);
        assert_eq!(DynamicQuantizeLinear::params(0.0, 0.0), (1.0, 0));
    }
}
