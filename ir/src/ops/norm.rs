//! BatchNormalization (inference) and LRN.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::error::OpError;
use crate::invalid;
use crate::ops::conv::from_f64;
use crate::ops::{InferCx, Op, OpDef, expect_float, input, same_dtype};
use crate::shape::TensorType;
use crate::tensor::Tensor;

/// `y = (x - mean) / sqrt(var + epsilon) * scale + bias`, per channel (dim 1). The parameters have
/// shape `[C]`, or `[C, spatial...]` for the old `spatial = 0` form, which normalises per
/// activation.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    pub epsilon: f32,
}

impl BatchNorm {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let epsilon = a.float("epsilon", 1e-5)?;
        a.ignore("momentum");
        // spatial = 0 (before opset 9) means per-activation parameters; their shapes say which form.
        a.ignore("spatial");
        if a.int("training_mode", 0)? != 0 {
            return Err(OpError::Unsupported("BatchNormalization with training_mode = 1".into()));
        }
        Ok(Op::BatchNorm(BatchNorm { epsilon }))
    }
}

impl OpDef for BatchNorm {
    fn name(&self) -> &'static str {
        "BatchNormalization"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(5, 5)?;
        if cx.n_outputs != 1 {
            return Err(OpError::Unsupported("BatchNormalization's training outputs (mean, var)".into()));
        }
        let x = cx.ty(0)?;
        expect_float(x, "input")?;
        if x.rank() < 2 {
            invalid!("input must have rank >= 2, found {x}");
        }
        for (i, name) in [(1, "scale"), (2, "bias"), (3, "mean"), (4, "var")] {
            let p = cx.ty(i)?;
            same_dtype(x, p, name)?;
            if p.rank() == 0 || p.shape[0] != x.shape[1] || p.rank() > 1 && p.shape[..] != x.shape[1..] {
                invalid!("{name} {p} must have shape [C] or [C, spatial...] for input {x}");
            }
        }
        Ok(vec![x.clone()])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let p: Vec<Vec<f64>> =
            (1..5).map(|i| input(inputs, i)?.to_f64s().map_err(OpError::from)).collect::<Result<_, _>>()?;
        let (scale, bias, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
        let xs = x.shape();
        let c = xs[1];
        let inner: usize = xs[2..].iter().product();
        // Per-channel parameters repeat over the spatial positions; per-activation ones do not.
        let per_act = scale.len() != c;
        let xv = x.to_f64s()?;
        let eps = self.epsilon as f64;
        let out: Vec<f64> = xv
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let k = if per_act { i % (c * inner) } else { (i / inner) % c };
                (v - mean[k]) / (var[k] + eps).sqrt() * scale[k] + bias[k]
            })
            .collect();
        Ok(vec![from_f64(x.dtype(), xs.to_vec(), out)])
    }

    fn attrs(&self) -> AttrList {
        vec![("epsilon", AttrValue::Float(self.epsilon))]
    }
}

/// Local response normalisation across channels.
#[derive(Clone, Debug, PartialEq)]
pub struct Lrn {
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
    pub size: usize,
}

impl Lrn {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let size = a.opt_int("size")?.ok_or_else(|| OpError::Invalid("attribute 'size' is required".into()))?;
        let size = crate::ops::conv::positive(vec![size], "size")?[0] as i64;
        Ok(Op::Lrn(Lrn {
            alpha: a.float("alpha", 1e-4)?,
            beta: a.float("beta", 0.75)?,
            bias: a.float("bias", 1.0)?,
            size: size as usize,
        }))
    }
}

impl OpDef for Lrn {
    fn name(&self) -> &'static str {
        "LRN"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let x = cx.ty(0)?;
        expect_float(x, "input")?;
        if x.rank() < 3 {
            invalid!("input must have rank >= 3, found {x}");
        }
        Ok(vec![x.clone()])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let xs = x.shape();
        let (n, c) = (xs[0], xs[1]);
        let inner: usize = xs[2..].iter().product();
        let xv = x.to_f64s()?;
        let before = (self.size - 1) / 2;
        let after = self.size - 1 - before;
        let mut out = vec![0f64; xv.len()];
        for ni in 0..n {
            for ci in 0..c {
                let lo = ci.saturating_sub(before);
                let hi = (ci + after).min(c - 1);
                for s in 0..inner {
                    let sq: f64 = (lo..=hi).map(|k| xv[(ni * c + k) * inner + s].powi(2)).sum();
                    let i = (ni * c + ci) * inner + s;
                    let den = (self.bias as f64 + self.alpha as f64 / self.size as f64 * sq).powf(self.beta as f64);
                    out[i] = xv[i] / den;
                }
            }
        }
        Ok(vec![from_f64(x.dtype(), xs.to_vec(), out)])
    }

    fn attrs(&self) -> AttrList {
        vec![
            ("alpha", AttrValue::Float(self.alpha)),
            ("beta", AttrValue::Float(self.beta)),
            ("bias", AttrValue::Float(self.bias)),
            ("size", AttrValue::Int(self.size as i64)),
        ]
    }
}

/// The mean of a row and `1 / sqrt(var + epsilon)` of its biased variance: what LayerNorm and
/// InstanceNorm normalise by.
fn row_stats(row: &[f64], epsilon: f32) -> (f64, f64) {
    let len = row.len() as f64;
    let mean = row.iter().sum::<f64>() / len;
    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / len;
    (mean, 1.0 / (var + epsilon as f64).sqrt())
}

/// `y = (x - mean) / sqrt(var + epsilon) * scale + bias`, the mean and (biased) variance taken
/// over the axes from `axis` to the last. Scale and bias broadcast to those axes. The optional
/// outputs are the mean and `1 / sqrt(var + epsilon)`, with the normalised axes kept as 1s.
/// After inference `axis` is non-negative.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorm {
    pub axis: i64,
    pub epsilon: f32,
}

impl LayerNorm {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let axis = a.int("axis", -1)?;
        let epsilon = a.float("epsilon", 1e-5)?;
        // The precision of the statistics: the reference computes them in f64 whatever it says.
        let stash = a.int("stash_type", 1)?;
        if stash != 1 && stash != 11 {
            return Err(OpError::Unsupported(format!("LayerNormalization with stash_type {stash}")));
        }
        Ok(Op::LayerNorm(LayerNorm { axis, epsilon }))
    }

    /// `(rows, len)`: the input as rows of the normalised axes.
    pub fn rows(&self, shape: &[usize]) -> (usize, usize) {
        let a = self.axis as usize;
        (shape[..a].iter().product(), shape[a..].iter().product())
    }
}

impl OpDef for LayerNorm {
    fn name(&self) -> &'static str {
        "LayerNormalization"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(2, 3)?;
        if cx.n_outputs > 3 {
            invalid!("has at most 3 outputs, found {}", cx.n_outputs);
        }
        let x = cx.ty(0)?;
        expect_float(x, "input")?;
        let axis = crate::ops::norm_axis(self.axis, x.rank())?;
        self.axis = axis as i64;
        let normalised = &x.shape[axis..];
        for i in 1..cx.len() {
            let Some(p) = cx.opt_ty(i) else { continue };
            let what = if i == 1 { "scale" } else { "bias" };
            same_dtype(x, p, what)?;
            let b = crate::ops::binary::broadcast_shapes(normalised, &p.shape)?;
            if b.len() != normalised.len() || b[..] != normalised[..] {
                invalid!("{what} {p} does not broadcast to the normalised dims of the input {x}");
            }
        }
        let mut stat = x.shape.clone();
        for d in &mut stat[axis..] {
            *d = crate::shape::Dim::Known(1);
        }
        let mut out = vec![x.clone()];
        for _ in 1..cx.n_outputs {
            out.push(TensorType::new(x.dtype, stat.clone()));
        }
        Ok(out)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let xs = x.shape();
        let axis = crate::ops::norm_axis(self.axis, xs.len())?;
        let ln = LayerNorm { axis: axis as i64, ..*self };
        let (rows, len) = ln.rows(xs);
        // Scale and bias broadcast to the normalised dims, as one row.
        let param = |i: usize| -> Result<Option<Vec<f64>>, OpError> {
            let Some(p) = crate::ops::opt_input(inputs, i) else { return Ok(None) };
            let vals = p.to_f64s()?;
            let offs = crate::ops::binary::broadcast_offsets(p.shape(), &xs[axis..]);
            Ok(Some(offs.iter().map(|&o| vals[o]).collect()))
        };
        let scale = param(1)?.ok_or_else(|| OpError::Invalid("input 1 (scale) is required but missing".into()))?;
        let bias = param(2)?;
        let xv = x.to_f64s()?;
        let mut out = vec![0f64; xv.len()];
        let (mut means, mut inv_stds) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
        for r in 0..rows {
            let row = &xv[r * len..(r + 1) * len];
            let (mean, inv) = row_stats(row, self.epsilon);
            for (i, v) in row.iter().enumerate() {
                let b = bias.as_ref().map_or(0.0, |b| b[i]);
                out[r * len + i] = (v - mean) * inv * scale[i] + b;
            }
            means.push(mean);
            inv_stds.push(inv);
        }
        let mut stat_shape = xs.to_vec();
        for d in &mut stat_shape[axis..] {
            *d = 1;
        }
        Ok(vec![
            from_f64(x.dtype(), xs.to_vec(), out),
            from_f64(x.dtype(), stat_shape.clone(), means),
            from_f64(x.dtype(), stat_shape, inv_stds),
        ])
    }

    fn attrs(&self) -> AttrList {
        vec![("axis", AttrValue::Int(self.axis)), ("epsilon", AttrValue::Float(self.epsilon))]
    }
}

/// `y = (x - mean) / sqrt(var + epsilon) * scale[c] + bias[c]`, the mean and (biased) variance
/// taken per sample and channel over the spatial dims (dim 2 onwards); scale and bias have shape
/// `[C]`.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceNorm {
    pub epsilon: f32,
}

impl InstanceNorm {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::InstanceNorm(InstanceNorm { epsilon: a.float("epsilon", 1e-5)? }))
    }
}

impl OpDef for InstanceNorm {
    fn name(&self) -> &'static str {
        "InstanceNormalization"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(3, 3)?;
        let x = cx.ty(0)?;
        expect_float(x, "input")?;
        if x.rank() < 3 {
            invalid!("input must have rank >= 3 ([N, C, spatial...]), found {x}");
        }
        for (i, name) in [(1, "scale"), (2, "bias")] {
            let p = cx.ty(i)?;
            same_dtype(x, p, name)?;
            if p.rank() != 1 || p.shape[0] != x.shape[1] {
                invalid!("{name} {p} must have shape [C] for input {x}");
            }
        }
        Ok(vec![x.clone()])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let xs = x.shape();
        let (scale, bias) = (input(inputs, 1)?.to_f64s()?, input(inputs, 2)?.to_f64s()?);
        let c = xs[1];
        let len: usize = xs[2..].iter().product();
        let xv = x.to_f64s()?;
        let mut out = vec![0f64; xv.len()];
        // An empty spatial extent leaves xv empty: no rows (chunks of 1 only to avoid size 0).
        for (r, (row, o)) in xv.chunks_exact(len.max(1)).zip(out.chunks_exact_mut(len.max(1))).enumerate() {
            let (mean, inv) = row_stats(row, self.epsilon);
            let ch = r % c;
            for (o, v) in o.iter_mut().zip(row) {
                *o = (v - mean) * inv * scale[ch] + bias[ch];
            }
        }
        Ok(vec![from_f64(x.dtype(), xs.to_vec(), out)])
    }

    fn attrs(&self) -> AttrList {
        vec![("epsilon", AttrValue::Float(self.epsilon))]
    }
}
