//! MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::error::OpError;
use crate::invalid;
use crate::ops::conv::{Window, Window3, from_f64, spatial_dims};
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
    /// Max pool only: the optional Indices output counts in column-major order.
    pub column_major_indices: bool,
}

impl Pool {
    pub fn build(kind: PoolKind, a: &mut Attrs) -> Result<Op, OpError> {
        let window = Window::from_attrs(a)?;
        if window.kernel.is_empty() {
            invalid!("attribute 'kernel_shape' is required");
        }
        let ceil_mode = a.int("ceil_mode", 0)? != 0;
        let (count_include_pad, column_major_indices) = match kind {
            PoolKind::Avg => (a.int("count_include_pad", 0)? != 0, false),
            PoolKind::Max => (false, a.int("storage_order", 0)? != 0),
        };
        Ok(Op::Pool(Pool { kind, window, ceil_mode, count_include_pad, column_major_indices }))
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
        let max_outputs = if self.kind == PoolKind::Max { 2 } else { 1 };
        if cx.n_outputs > max_outputs {
            invalid!("has at most {max_outputs} output(s), found {}", cx.n_outputs);
        }
        let x = cx.ty(0)?;
        // MaxPool takes quantized tensors too (opset 12): their maximum is theirs.
        let int8 = matches!(x.dtype, crate::dtype::DType::U8 | crate::dtype::DType::I8);
        if !(self.kind == PoolKind::Max && int8) {
            expect_float(x, "input")?;
        }
        let spatial = spatial_dims(x, "input")?;
        let out = self.window.resolve(&spatial, self.ceil_mode)?;
        let mut shape = x.shape[..2].to_vec();
        shape.extend(out.into_iter().map(Dim::Known));
        let mut types = vec![TensorType::new(x.dtype, shape.clone())];
        if cx.n_outputs == 2 {
            types.push(TensorType::new(crate::dtype::DType::I64, shape));
        }
        Ok(types)
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let xs = x.shape();
        let mut win = self.window.clone();
        let osp = win.resolve(&xs[2..], self.ceil_mode)?;
        let Window3 {
            input: [id, ih, iw],
            output: [od, oh, ow],
            kernel: [kd, kh, kw],
            strides: [sd, sh, sw],
            dilations: [dd, dh, dw],
            pads: [pd, ph, pw],
            ends: [qd, qh, qw],
        } = win.in3(&xs[2..], &osp);
        let xv = x.to_f64s()?;
        let planes = xs[0] * xs[1];
        let mut out = Vec::with_capacity(planes * od * oh * ow);
        let mut indices: Vec<i64> = Vec::with_capacity(out.capacity());
        // Flat index of an input element (row-major, or column-major over the spatial dims).
        let flat = |pl: usize, z: usize, y: usize, x: usize| -> i64 {
            let spatial = if self.column_major_indices { z + y * id + x * id * ih } else { (z * ih + y) * iw + x };
            (pl * id * ih * iw + spatial) as i64
        };
        // A window coordinate is real when inside the input, padding when inside the pads.
        let pos = |o: usize, k: usize, s: usize, d: usize, p: usize| (o * s + k * d) as i64 - p as i64;
        for pl in 0..planes {
            let xp = &xv[pl * id * ih * iw..][..id * ih * iw];
            for oz in 0..od {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let (mut sum, mut real, mut padded) = (0f64, 0usize, 0usize);
                        // The first real element, then any strictly greater one: a NaN wins only
                        // in first position. This is ONNX Runtime's generic MaxPool (measured; it
                        // runs when Indices are asked for or dilations are set). Its MLAS kernel
                        // (plain 2-D/3-D pools) keeps or drops a NaN depending on which SIMD lane
                        // it lands in, which is no rule to follow.
                        let mut max: Option<(f64, i64)> = None;
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
                                        let (z, y, xx) = (z as usize, y as usize, xx as usize);
                                        let v = xp[(z * ih + y) * iw + xx];
                                        sum += v;
                                        if max.is_none_or(|(m, _)| v > m) {
                                            max = Some((v, flat(pl, z, y, xx)));
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
                            PoolKind::Max => {
                                let (m, i) = max.unwrap_or((f64::NEG_INFINITY, -1));
                                indices.push(i);
                                m
                            }
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
        let values = if x.dtype().is_int() {
            // Integer inputs: every maximum is one of them, exact in f64.
            let f = Tensor::from_vec(shape.clone(), out);
            crate::ops::Cast { to: x.dtype() }.eval(&[Some(&f)])?.remove(0)
        } else {
            from_f64(x.dtype(), shape.clone(), out)
        };
        let mut outs = vec![values];
        if self.kind == PoolKind::Max {
            outs.push(Tensor::from_vec(shape, indices));
        }
        Ok(outs)
    }

    fn attrs(&self) -> AttrList {
        let mut out = vec![];
        self.window.write_attrs(&mut out);
        out.push(("ceil_mode", AttrValue::Int(self.ceil_mode as i64)));
        if self.kind == PoolKind::Avg {
            out.push(("count_include_pad", AttrValue::Int(self.count_include_pad as i64)));
        }
        if self.column_major_indices {
            out.push(("storage_order", AttrValue::Int(1)));
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
                    // MaxPool's rule over the whole plane (see `Pool::eval`).
                    PoolKind::Max => {
                        s.iter().copied().reduce(|a, b| if b > a { b } else { a }).unwrap_or(f64::NEG_INFINITY)
                    }
                }
            })
            .collect();
        let mut shape = xs[..2].to_vec();
        shape.extend(std::iter::repeat_n(1, xs.len() - 2));
        Ok(vec![from_f64(x.dtype(), shape, out)])
    }
}
