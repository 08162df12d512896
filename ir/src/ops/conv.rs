//! Conv and ConvTranspose, plus the sliding-window geometry (kernel, strides, pads, dilations,
//! auto_pad) that pooling shares.

use rayon::prelude::*;

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::error::OpError;
use crate::invalid;
use crate::ops::{InferCx, Op, OpDef, expect_float, input, need_known, opt_input, same_dtype};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

/// How `auto_pad` asks for padding to be derived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

impl AutoPad {
    pub fn parse(s: &str) -> Result<AutoPad, OpError> {
        Ok(match s {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            other => invalid!("unknown auto_pad '{other}'"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            AutoPad::NotSet => "NOTSET",
            AutoPad::SameUpper => "SAME_UPPER",
            AutoPad::SameLower => "SAME_LOWER",
            AutoPad::Valid => "VALID",
        }
    }
}

/// Sliding-window geometry over the spatial dims (all after batch and channel). After shape
/// inference every list is explicit and `auto_pad` is `NotSet`.
#[derive(Clone, Debug, PartialEq)]
pub struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    /// Begin pads for every spatial dim, then end pads (ONNX order).
    pub pads: Vec<usize>,
    pub dilations: Vec<usize>,
    pub auto_pad: AutoPad,
}

/// Largest value a size-like attribute may take. Keeping kernels, strides, dilations and pads
/// below 2^31 keeps every window computation far from overflow.
pub const MAX_ATTR: i64 = crate::tensor::MAX_ELEMENTS as i64;

pub(crate) fn positive(v: Vec<i64>, what: &str) -> Result<Vec<usize>, OpError> {
    v.into_iter()
        .map(|x| {
            if !(1..=MAX_ATTR).contains(&x) {
                invalid!("{what} must be between 1 and 2^31, found {x}")
            }
            Ok(x as usize)
        })
        .collect()
}

pub(crate) fn non_negative(v: Vec<i64>, what: &str) -> Result<Vec<usize>, OpError> {
    v.into_iter()
        .map(|x| {
            if !(0..=MAX_ATTR).contains(&x) {
                invalid!("{what} must be between 0 and 2^31, found {x}")
            }
            Ok(x as usize)
        })
        .collect()
}

impl Window {
    pub fn from_attrs(a: &mut Attrs) -> Result<Window, OpError> {
        Ok(Window {
            kernel: positive(a.opt_ints("kernel_shape")?.unwrap_or_default(), "kernel_shape")?,
            strides: positive(a.opt_ints("strides")?.unwrap_or_default(), "strides")?,
            pads: non_negative(a.opt_ints("pads")?.unwrap_or_default(), "pads")?,
            dilations: positive(a.opt_ints("dilations")?.unwrap_or_default(), "dilations")?,
            auto_pad: AutoPad::parse(&a.string("auto_pad", "NOTSET")?)?,
        })
    }

    pub fn write_attrs(&self, out: &mut AttrList) {
        let ints = |v: &[usize]| AttrValue::Ints(v.iter().map(|&x| x as i64).collect());
        out.push(("kernel_shape", ints(&self.kernel)));
        out.push(("strides", ints(&self.strides)));
        out.push(("pads", ints(&self.pads)));
        out.push(("dilations", ints(&self.dilations)));
        if self.auto_pad != AutoPad::NotSet {
            out.push(("auto_pad", AttrValue::Str(self.auto_pad.name().into())));
        }
    }

    /// Fills defaults for `n` spatial dims and checks list lengths.
    fn fill(&mut self, n: usize) -> Result<(), OpError> {
        if self.kernel.len() != n {
            invalid!("kernel_shape has {} entries for {n} spatial dims", self.kernel.len());
        }
        // Padding can absorb any kernel (SAME pads grow with it), so only this bounds the taps
        // every output visits.
        if crate::tensor::checked_numel(&self.kernel).is_none() {
            invalid!("kernel_shape {:?} has more than 2^31 positions", self.kernel);
        }
        for (v, what, len) in [(&mut self.strides, "strides", n), (&mut self.dilations, "dilations", n)] {
            if v.is_empty() {
                *v = vec![1; len];
            } else if v.len() != len {
                invalid!("{what} has {} entries for {n} spatial dims", v.len());
            }
        }
        if self.pads.is_empty() {
            self.pads = vec![0; 2 * n];
        } else if self.pads.len() != 2 * n {
            invalid!("pads has {} entries for {n} spatial dims (needs {})", self.pads.len(), 2 * n);
        }
        Ok(())
    }

    /// Resolves `auto_pad` into explicit pads for the given input sizes, then returns the output
    /// sizes. `ceil_mode` rounds the output size up (pooling), counting only windows that start
    /// inside the input or its begin padding.
    pub fn resolve(&mut self, input: &[usize], ceil_mode: bool) -> Result<Vec<usize>, OpError> {
        let n = input.len();
        self.fill(n)?;
        empty_spatial(input)?;
        match self.auto_pad {
            AutoPad::NotSet => {}
            AutoPad::Valid => self.pads = vec![0; 2 * n],
            AutoPad::SameUpper | AutoPad::SameLower => {
                for i in 0..n {
                    let out = input[i].div_ceil(self.strides[i]);
                    let span = (self.kernel[i] - 1) * self.dilations[i] + 1;
                    let total = ((out - 1) * self.strides[i] + span).saturating_sub(input[i]);
                    let small = total / 2;
                    let (b, e) = if self.auto_pad == AutoPad::SameUpper {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    };
                    self.pads[i] = b;
                    self.pads[n + i] = e;
                }
            }
        }
        self.auto_pad = AutoPad::NotSet;
        (0..n)
            .map(|i| {
                let span = (self.kernel[i] - 1) * self.dilations[i] + 1;
                let padded = input[i] + self.pads[i] + self.pads[n + i];
                if padded < span {
                    invalid!(
                        "window of extent {span} does not fit spatial dim {i} of size {} with pads {}+{}",
                        input[i],
                        self.pads[i],
                        self.pads[n + i]
                    );
                }
                let mut out = if ceil_mode {
                    (padded - span).div_ceil(self.strides[i]) + 1
                } else {
                    (padded - span) / self.strides[i] + 1
                };
                // With ceil_mode the last window must start inside the input or the begin pad.
                if ceil_mode && (out - 1) * self.strides[i] >= input[i] + self.pads[i] {
                    out -= 1;
                }
                Ok(out)
            })
            .collect()
    }

    /// Total number of kernel positions.
    pub fn kernel_size(&self) -> usize {
        self.kernel.iter().product()
    }
}

/// Refuses an input with an empty spatial dim: a window over it would read only padding (SAME
/// padding and the transposed scatter would also count from `size - 1`).
fn empty_spatial(input: &[usize]) -> Result<(), OpError> {
    if let Some(i) = input.iter().position(|&d| d == 0) {
        invalid!("spatial dim {i} of the input is empty (size 0)");
    }
    Ok(())
}

/// Static spatial dims of an input of rank >= 3.
pub fn spatial_dims(x: &TensorType, what: &str) -> Result<Vec<usize>, OpError> {
    if x.rank() < 3 {
        invalid!("{what} must have rank >= 3 (N, C, spatial...), found {x}");
    }
    x.shape[2..].iter().enumerate().map(|(i, d)| need_known(d, &format!("spatial dim {i} of {what}"))).collect()
}

/// Pads a list of spatial sizes to 3 (depth, height, width) with leading `fill`s, so that one
/// loop nest serves 1-D, 2-D and 3-D windows.
pub fn to3(v: &[usize], fill: usize) -> [usize; 3] {
    let mut out = [fill; 3];
    let off = 3 - v.len();
    out[off..].copy_from_slice(v);
    out
}

/// A resolved window on (depth, height, width): fewer spatial dims come first as size-1 dims with
/// unit kernel, stride and dilation and no padding. The reference loops of conv, transposed conv
/// and pools, and the compiler's kernel geometries, all read a window this way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window3 {
    pub input: [usize; 3],
    pub output: [usize; 3],
    pub kernel: [usize; 3],
    pub strides: [usize; 3],
    pub dilations: [usize; 3],
    /// Begin pads.
    pub pads: [usize; 3],
    /// End pads.
    pub ends: [usize; 3],
}

impl Window {
    /// The window (pads resolved) over the spatial `input` and `output` sizes, as [`Window3`].
    pub fn in3(&self, input: &[usize], output: &[usize]) -> Window3 {
        let nsp = input.len();
        Window3 {
            input: to3(input, 1),
            output: to3(output, 1),
            kernel: to3(&self.kernel, 1),
            strides: to3(&self.strides, 1),
            dilations: to3(&self.dilations, 1),
            pads: to3(&self.pads[..nsp], 0),
            ends: to3(&self.pads[nsp..], 0),
        }
    }
}

/// What Conv and ConvTranspose check alike about their input and weights.
pub(crate) struct ConvInputs<'a> {
    pub(crate) x: &'a TensorType,
    pub(crate) w: &'a TensorType,
    /// Static weight dims.
    pub(crate) ws: Vec<usize>,
    /// Static spatial dims of the input.
    pub(crate) spatial: Vec<usize>,
    /// Input channels.
    pub(crate) c: usize,
}

impl<'a> ConvInputs<'a> {
    /// Checks types and ranks, and takes `kernel_shape` from the weights when absent.
    fn check(cx: &InferCx<'a>, window: &mut Window) -> Result<ConvInputs<'a>, OpError> {
        cx.arity(2, 3)?;
        let (x, w) = (cx.ty(0)?, cx.ty(1)?);
        expect_float(x, "input")?;
        same_dtype(x, w, "input and weights")?;
        ConvInputs::shapes(x, w, window)
    }

    /// The checks that do not depend on the element types (the integer convs share them).
    pub(crate) fn shapes(x: &'a TensorType, w: &'a TensorType, window: &mut Window) -> Result<ConvInputs<'a>, OpError> {
        let spatial = spatial_dims(x, "input")?;
        let ws = w.static_dims().ok_or_else(|| OpError::DynamicShape("weights with symbolic shape".into()))?;
        if ws.len() != x.rank() {
            invalid!("weights {w} must have the input's rank {}", x.rank());
        }
        if window.kernel.is_empty() {
            // The weights stand in for the attribute, so they must satisfy what it would.
            if ws[2..].contains(&0) {
                invalid!("weights {w} give kernel_shape {:?}; every kernel dim must be at least 1", &ws[2..]);
            }
            window.kernel = ws[2..].to_vec();
        } else if window.kernel != ws[2..] {
            invalid!("kernel_shape {:?} disagrees with weights {w}", window.kernel);
        }
        let c = need_known(&x.shape[1], "input channel count")?;
        Ok(ConvInputs { x, w, ws, spatial, c })
    }
}

/// Convolution (cross-correlation, ONNX semantics), any number of groups.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv {
    pub window: Window,
    pub group: usize,
}

impl Conv {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let window = Window::from_attrs(a)?;
        let group = positive(vec![a.int("group", 1)?], "group")?[0];
        Ok(Op::Conv(Conv { window, group }))
    }
}

impl OpDef for Conv {
    fn name(&self) -> &'static str {
        "Conv"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        let inputs = ConvInputs::check(cx, &mut self.window)?;
        if let Some(b) = cx.opt_ty(2) {
            same_dtype(inputs.x, b, "input and bias")?;
        }
        let shape = self.output_shape(&inputs, cx.opt_ty(2))?;
        Ok(vec![TensorType::new(inputs.x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let bias = match opt_input(inputs, 2) {
            Some(b) => b.to_f64s()?,
            None => vec![0.0; w.shape()[0]],
        };
        let (out, shape) = self.sums(&x.to_f64s()?, x.shape(), &w.to_f64s()?, w.shape(), &bias)?;
        Ok(vec![from_f64(x.dtype(), shape, out)])
    }

    fn attrs(&self) -> AttrList {
        let mut out = vec![];
        self.window.write_attrs(&mut out);
        out.push(("group", AttrValue::Int(self.group as i64)));
        out
    }

    fn macs(&self, inputs: &[Option<&TensorType>], outputs: &[TensorType]) -> u64 {
        let (Some(Some(w)), Some(o)) = (inputs.get(1), outputs.first()) else { return 0 };
        let per_out: usize = w.static_dims().map(|d| d[1..].iter().product()).unwrap_or(0);
        (o.numel().unwrap_or(0) * per_out) as u64
    }
}

impl Conv {
    /// The output shape from checked inputs and the bias type (its dtype is the caller's to check).
    pub(crate) fn output_shape(&mut self, inputs: &ConvInputs, bias: Option<&TensorType>) -> Result<Vec<Dim>, OpError> {
        let ConvInputs { x, w, ws, spatial, c } = inputs;
        let (m, c) = (ws[0], *c);
        if c != ws[1] * self.group {
            invalid!("input has {c} channels but weights {w} with group {} expect {}", self.group, ws[1] * self.group);
        }
        if m % self.group != 0 {
            invalid!("{m} output channels are not divisible by group {}", self.group);
        }
        if let Some(b) = bias
            && b.shape != [Dim::Known(m)]
        {
            invalid!("bias {b} must have shape [{m}]");
        }
        let out = self.window.resolve(spatial, false)?;
        let mut shape = vec![x.shape[0].clone(), Dim::Known(m)];
        shape.extend(out.into_iter().map(Dim::Known));
        Ok(shape)
    }

    /// The convolution's sums in f64, bias first: the reference of Conv, and exact for the
    /// integer convs (their products and sums stay far below 2^53). Returns the output and its
    /// shape.
    pub(crate) fn sums(
        &self,
        xv: &[f64],
        xs: &[usize],
        wv: &[f64],
        ws: &[usize],
        bv: &[f64],
    ) -> Result<(Vec<f64>, Vec<usize>), OpError> {
        let (n, c, m) = (xs[0], xs[1], ws[0]);
        let mut win = self.window.clone();
        let osp = win.resolve(&xs[2..], false)?;
        let Window3 {
            input: [id, ih, iw],
            output: [od, oh, ow],
            kernel: [kd, kh, kw],
            strides: [sd, sh, sw],
            dilations: [dd, dh, dw],
            pads: [pd, ph, pw],
            ..
        } = win.in3(&xs[2..], &osp);
        let cg = c / self.group;
        let mg = m / self.group;
        let plane = od * oh * ow;
        let mut out = vec![0f64; n * m * plane];
        // Output planes are independent and each is summed in the same order on any thread, so
        // the result does not depend on the thread count.
        out.par_chunks_mut(plane.max(1)).enumerate().for_each(|(p, acc)| {
            let (ni, mi) = (p / m, p % m);
            {
                let g = mi / mg;
                acc.fill(bv[mi]);
                // A pointwise conv (1x1, stride 1, no padding) reads each input plane exactly
                // like its output plane: one multiply-add over the whole plane per channel.
                let pointwise = kd * kh * kw == 1 && (sd, sh, sw) == (1, 1, 1) && (pd, ph, pw) == (0, 0, 0);
                for ci in 0..cg {
                    let xc = &xv[(ni * c + g * cg + ci) * id * ih * iw..][..id * ih * iw];
                    if pointwise && id * ih * iw == plane {
                        let wt = wv[mi * cg + ci];
                        for (o, x) in acc.iter_mut().zip(xc) {
                            *o += wt * x;
                        }
                        continue;
                    }
                    for (kz, ky, kx) in (0..kd).flat_map(|a| (0..kh).flat_map(move |b| (0..kw).map(move |c| (a, b, c))))
                    {
                        let wt = wv[(((mi * cg + ci) * kd + kz) * kh + ky) * kw + kx];
                        for oz in 0..od {
                            let Some(iz) = (oz * sd + kz * dd).checked_sub(pd).filter(|&v| v < id) else { continue };
                            for oy in 0..oh {
                                let Some(iy) = (oy * sh + ky * dh).checked_sub(ph).filter(|&v| v < ih) else {
                                    continue;
                                };
                                let row = &xc[(iz * ih + iy) * iw..][..iw];
                                let orow = &mut acc[(oz * oh + oy) * ow..][..ow];
                                // The outputs whose tap lands inside the row: ix = ox*sw + kx*dw - pw
                                // in [0, iw), worked out once instead of tested per element.
                                let shift = kx * dw;
                                let lo = pw.saturating_sub(shift).div_ceil(sw);
                                let hi = if iw + pw > shift { ((iw + pw - shift - 1) / sw + 1).min(ow) } else { 0 };
                                for ox in lo..hi {
                                    orow[ox] += wt * row[ox * sw + shift - pw];
                                }
                            }
                        }
                    }
                }
            }
        });
        let mut shape = vec![n, m];
        shape.extend(osp);
        Ok((out, shape))
    }
}

/// Converts f64 results to the op's float dtype.
pub fn from_f64(dtype: crate::dtype::DType, shape: Vec<usize>, v: Vec<f64>) -> Tensor {
    match dtype {
        crate::dtype::DType::F64 => Tensor::from_vec(shape, v),
        _ => Tensor::from_vec(shape, v.into_iter().map(|x| x as f32).collect::<Vec<f32>>()),
    }
}

/// Transposed convolution. After inference `output_shape` is folded into explicit pads.
#[derive(Clone, Debug, PartialEq)]
pub struct ConvTranspose {
    pub window: Window,
    pub group: usize,
    pub output_padding: Vec<usize>,
    pub output_shape: Vec<usize>,
}

impl ConvTranspose {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let window = Window::from_attrs(a)?;
        let group = positive(vec![a.int("group", 1)?], "group")?[0];
        let output_padding = non_negative(a.opt_ints("output_padding")?.unwrap_or_default(), "output_padding")?;
        let output_shape = positive(a.opt_ints("output_shape")?.unwrap_or_default(), "output_shape")?;
        Ok(Op::ConvTranspose(ConvTranspose { window, group, output_padding, output_shape }))
    }

    /// Resolves pads from `output_shape`/`auto_pad` and returns the output spatial sizes.
    pub fn resolve(&mut self, input: &[usize]) -> Result<Vec<usize>, OpError> {
        let n = input.len();
        empty_spatial(input)?;
        let auto = self.window.auto_pad;
        self.window.auto_pad = AutoPad::NotSet;
        self.window.fill(n)?;
        if self.output_padding.is_empty() {
            self.output_padding = vec![0; n];
        } else if self.output_padding.len() != n {
            invalid!("output_padding has {} entries for {n} spatial dims", self.output_padding.len());
        }
        let full = |i: usize, w: &Window, op: &[usize]| {
            w.strides[i] * (input[i] - 1) + op[i] + (w.kernel[i] - 1) * w.dilations[i] + 1
        };
        let target: Option<Vec<usize>> = if !self.output_shape.is_empty() {
            // output_shape may or may not include the N and C dims.
            let os = &self.output_shape;
            let sp = if os.len() == n + 2 { os[2..].to_vec() } else { os.clone() };
            if sp.len() != n {
                invalid!("output_shape {os:?} does not match {n} spatial dims");
            }
            Some(sp)
        } else if matches!(auto, AutoPad::SameUpper | AutoPad::SameLower) {
            Some((0..n).map(|i| input[i] * self.window.strides[i]).collect())
        } else {
            None
        };
        if auto == AutoPad::Valid {
            self.window.pads = vec![0; 2 * n];
        }
        if let Some(t) = target {
            for i in 0..n {
                let f = full(i, &self.window, &self.output_padding);
                if f < t[i] {
                    // The output is larger than the full scatter: pad at the end with zeros,
                    // which ONNX expresses as extra output_padding.
                    self.output_padding[i] += t[i] - f;
                    self.window.pads[i] = 0;
                    self.window.pads[n + i] = 0;
                    continue;
                }
                let total = f - t[i];
                let half = total / 2;
                let (b, e) = if auto == AutoPad::SameUpper { (half, total - half) } else { (total - half, half) };
                self.window.pads[i] = b;
                self.window.pads[n + i] = e;
            }
            self.output_shape.clear();
        }
        (0..n)
            .map(|i| {
                let f = full(i, &self.window, &self.output_padding);
                let p = self.window.pads[i] + self.window.pads[n + i];
                if f <= p {
                    invalid!(
                        "pads {}+{} leave no output in spatial dim {i}",
                        self.window.pads[i],
                        self.window.pads[n + i]
                    );
                }
                Ok(f - p)
            })
            .collect()
    }
}

impl OpDef for ConvTranspose {
    fn name(&self) -> &'static str {
        "ConvTranspose"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        let ConvInputs { x, w, ws, spatial, c } = ConvInputs::check(cx, &mut self.window)?;
        if c != ws[0] || c % self.group != 0 {
            invalid!("input has {c} channels but weights {w} (group {}) expect {}", self.group, ws[0]);
        }
        let m = ws[1] * self.group;
        if let Some(b) = cx.opt_ty(2) {
            same_dtype(x, b, "input and bias")?;
            if b.shape != [Dim::Known(m)] {
                invalid!("bias {b} must have shape [{m}]");
            }
        }
        let out = self.resolve(&spatial)?;
        let mut shape = vec![x.shape[0].clone(), Dim::Known(m)];
        shape.extend(out.into_iter().map(Dim::Known));
        Ok(vec![TensorType::new(x.dtype, shape)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let b = opt_input(inputs, 2);
        let (xs, ws) = (x.shape(), w.shape());
        let mut me = self.clone();
        let osp = me.resolve(&xs[2..])?;
        let win = &me.window;
        let (n, c) = (xs[0], xs[1]);
        let mg = ws[1];
        let m = mg * me.group;
        let cg = c / me.group;
        let Window3 {
            input: [id, ih, iw],
            output: [od, oh, ow],
            kernel: [kd, kh, kw],
            strides: [sd, sh, sw],
            dilations: [dd, dh, dw],
            pads: [pd, ph, pw],
            ..
        } = win.in3(&xs[2..], &osp);
        let (xv, wv) = (x.to_f64s()?, w.to_f64s()?);
        let bv = match b {
            Some(b) => b.to_f64s()?,
            None => vec![0.0; m],
        };
        let plane = od * oh * ow;
        let mut out = vec![0f64; n * m * plane];
        out.par_chunks_mut(plane.max(1)).enumerate().for_each(|(p, acc)| {
            let (ni, mi) = (p / m, p % m);
            {
                let (g, mo) = (mi / mg, mi % mg);
                acc.fill(bv[mi]);
                for ci in 0..cg {
                    let cin = g * cg + ci;
                    let xc = &xv[(ni * c + cin) * id * ih * iw..][..id * ih * iw];
                    for kz in 0..kd {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let wt = wv[(((cin * mg + mo) * kd + kz) * kh + ky) * kw + kx];
                                for iz in 0..id {
                                    let Some(oz) = (iz * sd + kz * dd).checked_sub(pd).filter(|&v| v < od) else {
                                        continue;
                                    };
                                    for iy in 0..ih {
                                        let Some(oy) = (iy * sh + ky * dh).checked_sub(ph).filter(|&v| v < oh) else {
                                            continue;
                                        };
                                        for ix in 0..iw {
                                            if let Some(ox) = (ix * sw + kx * dw).checked_sub(pw).filter(|&v| v < ow) {
                                                acc[(oz * oh + oy) * ow + ox] += wt * xc[(iz * ih + iy) * iw + ix];
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        });
        let mut shape = vec![n, m];
        shape.extend(osp);
        Ok(vec![from_f64(x.dtype(), shape, out)])
    }

    fn attrs(&self) -> AttrList {
        let mut out = vec![];
        self.window.write_attrs(&mut out);
        out.push(("group", AttrValue::Int(self.group as i64)));
        out.push(("output_padding", AttrValue::Ints(self.output_padding.iter().map(|&x| x as i64).collect())));
        if !self.output_shape.is_empty() {
            out.push(("output_shape", AttrValue::Ints(self.output_shape.iter().map(|&x| x as i64).collect())));
        }
        out
    }

    fn macs(&self, inputs: &[Option<&TensorType>], _: &[TensorType]) -> u64 {
        let (Some(Some(x)), Some(Some(w))) = (inputs.first(), inputs.get(1)) else { return 0 };
        let per_in: usize = w.static_dims().map(|d| d[1..].iter().product()).unwrap_or(0);
        (x.numel().unwrap_or(0) * per_in) as u64
    }
}
