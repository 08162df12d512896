//! MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::error::OpError;
use crate::invalid;
use crate::ops::conv::{Window, from_f64, spatial_dims, to3};
use crate::ops::{InferCx, Op, OpDef, expect_float, input};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// A windowed max or average pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub kind: PoolKind,
    pub window: Window,
    pub ceil_mode: bool,
    /// Average pool only: divide by the window size including padding (clipped to the padded
    /// input) rather than by the number of real elements.
    pub count_include_pad: bool,
}

impl Pool {
    pub fn build(kind: PoolKind, a: &mut Attrs) -> Result<Op, OpError> {
        let window = Window::from_attrs(a)?;
        if window.kernel.is_empty() {
            invalid!("attribute 'kernel_shape' is required");
        }
        let ceil_mode = a.int("ceil_mode", 0)? != 0;
        let count_include_pad = match kind {
            PoolKind::Avg => a.int("count_include_pad", 0)? != 0,
            PoolKind::Max => {
                // Only affects the Indices output, which is not supported.
                a.ignore("storage_order");
                false
            }
        };
        Ok(Op::Pool(Pool { kind, window, ceil_mode, count_include_pad }))
    }
}

impl OpDef for Pool {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "MaxPool",
            PoolKind::Avg => "AveragePool",
        }
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        if cx.n_outputs != 1 {
            return Err(OpError::Unsupported("MaxPool's Indices output".into()));
        }
        let x = cx.ty(0)?;
        expect_float(x, "input")?;
        let spatial = spatial_dims(x, "input")?;
        let out = self.window.resolve(&spatial, self.ceil_mode)?;
        let mut shape = x.shape[..2].to_vec();
        shape.extend(out.into_iter().map(Dim::Known));
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let xs = x.shape();
        let nsp = xs.len() - 2;
        let mut win = self.window.clone();
        let osp = win.resolve(&xs[2..], self.ceil_mode)?;
        let [id, ih, iw] = to3(&xs[2..], 1);
        let [od, oh, ow] = to3(&osp, 1);
        let [kd, kh, kw] = to3(&win.kernel, 1);
        let [sd, sh, sw] = to3(&win.strides, 1);
        let [dd, dh, dw] = to3(&win.dilations, 1);
        let [pd, ph, pw] = to3(&win.pads[..nsp], 0);
        let [qd, qh, qw] = to3(&win.pads[nsp..], 0);
        let xv = x.to_f64s()?;
        let planes = xs[0] * xs[1];
        let mut out = Vec::with_capacity(planes * od * oh * ow);
        // A window coordinate is real when inside the input, padding when inside the pads.
        let pos = |o: usize, k: usize, s: usize, d: usize, p: usize| (o * s + k * d) as i64 - p as i64;
        for pl in 0..planes {
            let xp = &xv[pl * id * ih * iw..][..id * ih * iw];
            for oz in 0..od {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (mut sum, mut max, mut real, mut padded) = (0f64, f64::NEG_INFINITY, 0usize, 0usize);
                        for kz in 0..kd {
                            let z = pos(oz, kz, sd, dd, pd);
                            for ky in 0..kh {
                                let y = pos(oy, ky, sh, dh, ph);
                                for kx in 0..kw {
                                    let xx = pos(ox, kx, sw, dw, pw);
                                    let inside = |v: i64, size: usize| v >= 0 && (v as usize) < size;
                                    let in_pad = |v: i64, size: usize, p: usize, q: usize| {
                                        v >= -(p as i64) && v < (size + q) as i64
                                    };
                                    if inside(z, id) && inside(y, ih) && inside(xx, iw) {
                                        let v = xp[(z as usize * ih + y as usize) * iw + xx as usize];
                                        sum += v;
                                        if v > max || v.is_nan() {
                                            max = v;
                                        }
                                        real += 1;
                                    }
                                    if in_pad(z, id, pd, qd) && in_pad(y, ih, ph, qh) && in_pad(xx, iw, pw, qw) {
                                        padded += 1;
                                    }
                                }
                            }
                        }
                        out.push(match self.kind {
                            PoolKind::Max => max,
                            PoolKind::Avg => {
                                let div = if self.count_include_pad { padded } else { real };
                                if div == 0 { 0.0 } else { sum / div as f64 }
                            }
                        });
                    }
                }
            }
        }
        let mut shape = xs[..2].to_vec();
        shape.extend(osp);
        Ok(vec![from_f64(x.dtype(), shape, out)])
    }

    fn attrs(&self) -> AttrList {
        let mut out = vec![];
        self.window.write_attrs(&mut out);
        out.push(("ceil_mode", AttrValue::Int(self.ceil_mode as i64)));
        if self.kind == PoolKind::Avg {
            out.push(("count_include_pad", AttrValue::Int(self.count_include_pad as i64)));
        }
        out
    }
}

/// Average or max over all spatial positions, per channel.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalPool {
    pub kind: PoolKind,
}

impl GlobalPool {
    pub fn build(kind: PoolKind, _: &mut Attrs) -> Result<Op, OpError> {
        Ok(Op::GlobalPool(GlobalPool { kind }))
    }
}

impl OpDef for GlobalPool {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "GlobalMaxPool",
            PoolKind::Avg => "GlobalAveragePool",
        }
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 1)?;
        let x = cx.ty(0)?;
        expect_float(x, "input")?;
        if x.rank() < 2 {
            invalid!("input must have rank >= 2, found {x}");
        }
        let mut shape = x.shape[..2].to_vec();
        shape.extend(std::iter::repeat_n(Dim::Known(1), x.rank() - 2));
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let xs = x.shape();
        let planes = xs[0] * xs[1];
        let size: usize = xs[2..].iter().product();
        let xv = x.to_f64s()?;
        let out: Vec<f64> = (0..planes)
            .map(|p| {
                let s = &xv[p * size..][..size];
                match self.kind {
                    PoolKind::Avg => s.iter().sum::<f64>() / size as f64,
                    PoolKind::Max => {
                        s.iter().copied().fold(f64::NEG_INFINITY, |a, b| if b > a || b.is_nan() { b } else { a })
                    }
                }
            })
            .collect();
        let mut shape = xs[..2].to_vec();
        shape.extend(std::iter::repeat_n(1, xs.len() - 2));
        Ok(vec![from_f64(x.dtype(), shape, out)])
    }
}
