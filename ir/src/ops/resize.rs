//! Resize (nearest, linear and cubic, with antialiasing, every coordinate transformation mode).
//! Upsample and the opset-10 Resize are imported as this op with the asymmetric transform and the
//! rounding they implied.

use crate::attrs::{AttrList, AttrValue, Attrs};
use crate::error::OpError;
use crate::invalid;
use crate::ops::conv::from_f64;
use crate::ops::{InferCx, Op, OpDef, expect_float, input, need_known, norm_axis, opt_input};
use crate::shape::{Dim, TensorType};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeMode {
    Nearest,
    Linear,
    Cubic,
}

/// How an output coordinate maps back to an input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoordMode {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
    TfCropAndResize,
}

const COORD_MODES: [(CoordMode, &str); 7] = [
    (CoordMode::HalfPixel, "half_pixel"),
    (CoordMode::HalfPixelSymmetric, "half_pixel_symmetric"),
    (CoordMode::PytorchHalfPixel, "pytorch_half_pixel"),
    (CoordMode::AlignCorners, "align_corners"),
    (CoordMode::Asymmetric, "asymmetric"),
    (CoordMode::TfHalfPixelForNn, "tf_half_pixel_for_nn"),
    (CoordMode::TfCropAndResize, "tf_crop_and_resize"),
];

/// How nearest mode rounds a fractional input coordinate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Upsample and opset-10 Resize: floor when enlarging, ceil when shrinking (what ONNX Runtime
    /// does for those ops). Not an ONNX attribute value; only the importer sets it.
    Simple,
}

const NEAREST_MODES: [(NearestMode, &str); 5] = [
    (NearestMode::RoundPreferFloor, "round_prefer_floor"),
    (NearestMode::RoundPreferCeil, "round_prefer_ceil"),
    (NearestMode::Floor, "floor"),
    (NearestMode::Ceil, "ceil"),
    (NearestMode::Simple, "simple"),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Resize with inputs X, roi (tf_crop_and_resize only), scales, sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Resize {
    pub mode: ResizeMode,
    pub coord: CoordMode,
    pub nearest: NearestMode,
    pub extrapolation_value: f32,
    pub axes: Option<Vec<i64>>,
    pub aspect: AspectPolicy,
    /// Cubic only: the kernel's `A` and whether taps outside the input are dropped (and the rest
    /// renormalised) instead of repeating the edge.
    pub cubic_coeff_a: f32,
    pub exclude_outside: bool,
    /// Linear and cubic: widen the filter by 1/scale when shrinking.
    pub antialias: bool,
}

fn lookup<T: Copy>(table: &[(T, &str)], s: &str, what: &str) -> Result<T, OpError> {
    table
        .iter()
        .find(|(_, n)| *n == s)
        .map(|(v, _)| *v)
        .ok_or_else(|| OpError::Invalid(format!("unknown {what} '{s}'")))
}

fn name_of<T: Copy + PartialEq>(table: &[(T, &'static str)], v: T) -> &'static str {
    table.iter().find(|(x, _)| *x == v).map_or("?", |(_, n)| n)
}

impl Resize {
    pub fn build(a: &mut Attrs) -> Result<Op, OpError> {
        let mode = match a.string("mode", "nearest")?.as_str() {
            "nearest" => ResizeMode::Nearest,
            "linear" | "bilinear" | "trilinear" => ResizeMode::Linear,
            "cubic" | "bicubic" => ResizeMode::Cubic,
            m => invalid!("unknown mode '{m}'"),
        };
        let coord = lookup(
            &COORD_MODES,
            &a.string("coordinate_transformation_mode", "half_pixel")?,
            "coordinate_transformation_mode",
        )?;
        let nearest = lookup(&NEAREST_MODES, &a.string("nearest_mode", "round_prefer_floor")?, "nearest_mode")?;
        let extrapolation_value = a.float("extrapolation_value", 0.0)?;
        let cubic_coeff_a = a.float("cubic_coeff_a", -0.75)?;
        let exclude_outside = a.int("exclude_outside", 0)? != 0;
        // Nearest mode has no filter to widen.
        let antialias = a.int("antialias", 0)? != 0 && mode != ResizeMode::Nearest;
        let axes = a.opt_ints("axes")?;
        let aspect = match a.string("keep_aspect_ratio_policy", "stretch")?.as_str() {
            "stretch" => AspectPolicy::Stretch,
            "not_larger" => AspectPolicy::NotLarger,
            "not_smaller" => AspectPolicy::NotSmaller,
            p => invalid!("unknown keep_aspect_ratio_policy '{p}'"),
        };
        Ok(Op::Resize(Resize {
            mode,
            coord,
            nearest,
            extrapolation_value,
            axes,
            aspect,
            cubic_coeff_a,
            exclude_outside,
            antialias,
        }))
    }

    /// Output dims and the per-dim scales, from the input dims and scales or sizes.
    fn plan(&self, x: &[Dim], scales: Option<&[f64]>, sizes: Option<&[i64]>) -> Result<(Vec<Dim>, Vec<f64>), OpError> {
        let rank = x.len();
        let axes: Vec<usize> = match &self.axes {
            Some(a) => a.iter().map(|&v| norm_axis(v, rank)).collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        if let Some(&ax) = axes.iter().enumerate().find_map(|(i, a)| axes[..i].contains(a).then_some(a)) {
            invalid!("axes {:?} repeat axis {ax}", self.axes.as_deref().unwrap_or_default());
        }
        let scales = scales.filter(|s| !s.is_empty());
        let sizes = sizes.filter(|s| !s.is_empty());
        let mut out: Vec<Dim> = x.to_vec();
        let mut sc = vec![1f64; rank];
        match (scales, sizes) {
            (Some(s), None) => {
                if s.len() != axes.len() {
                    invalid!("scales has {} entries for {} axes", s.len(), axes.len());
                }
                for (&ax, &v) in axes.iter().zip(s) {
                    if v.is_nan() || v <= 0.0 {
                        invalid!("scale {v} must be positive");
                    }
                    sc[ax] = v;
                    if v == 1.0 && self.coord != CoordMode::TfCropAndResize {
                        continue;
                    }
                    let d = need_known(&x[ax], &format!("resized dim {ax}"))? as f64;
                    out[ax] = Dim::Known((d * v).floor() as usize);
                }
            }
            (None, Some(z)) => {
                if z.len() != axes.len() {
                    invalid!("sizes has {} entries for {} axes", z.len(), axes.len());
                }
                let dims: Vec<f64> = axes
                    .iter()
                    .map(|&ax| need_known(&x[ax], "resized dim").map(|d| d as f64))
                    .collect::<Result<_, _>>()?;
                if z.iter().any(|&v| v < 0) {
                    invalid!("sizes {z:?} has a negative entry");
                }
                let ratios: Vec<f64> = z.iter().zip(&dims).map(|(&s, &d)| s as f64 / d).collect();
                let uniform = match self.aspect {
                    AspectPolicy::Stretch => None,
                    AspectPolicy::NotLarger => Some(ratios.iter().copied().fold(f64::INFINITY, f64::min)),
                    AspectPolicy::NotSmaller => Some(ratios.iter().copied().fold(0.0, f64::max)),
                };
                for (i, &ax) in axes.iter().enumerate() {
                    match uniform {
                        None => {
                            sc[ax] = ratios[i];
                            out[ax] = Dim::Known(z[i] as usize);
                        }
                        Some(r) => {
                            sc[ax] = r;
                            // Round half up.
                            out[ax] = Dim::Known((dims[i] * r + 0.5).floor() as usize);
                        }
                    }
                }
            }
            (Some(_), Some(_)) => invalid!("only one of scales and sizes may be given"),
            (None, None) => invalid!("one of scales and sizes is required"),
        }
        // Every output element would interpolate between input elements that do not exist.
        for (ax, (i, o)) in x.iter().zip(&out).enumerate() {
            if i.known() == Some(0) && o.known().is_some_and(|o| o > 0) {
                invalid!("cannot resize the empty dim {ax} to size {o}");
            }
        }
        Ok((out, sc))
    }

    /// Maps output coordinate `o` of an axis back to the input. As in the ONNX reference, the
    /// modes that look at the output length use the real-valued `scale * d_in`, not the rounded
    /// output size.
    fn source(&self, o: usize, d_in: usize, d_out: usize, scale: f64, roi: (f64, f64)) -> f64 {
        let (o, din) = (o as f64, d_in as f64);
        let ow = scale * din;
        match self.coord {
            CoordMode::HalfPixel => (o + 0.5) / scale - 0.5,
            CoordMode::HalfPixelSymmetric => {
                let adjust = d_out as f64 / ow;
                let center = din / 2.0;
                center * (1.0 - adjust) + (o + 0.5) / scale - 0.5
            }
            CoordMode::PytorchHalfPixel => {
                if ow == 1.0 {
                    -0.5
                } else {
                    (o + 0.5) / scale - 0.5
                }
            }
            CoordMode::AlignCorners => {
                if ow == 1.0 {
                    0.0
                } else {
                    o * (din - 1.0) / (ow - 1.0)
                }
            }
            CoordMode::Asymmetric => o / scale,
            CoordMode::TfHalfPixelForNn => (o + 0.5) / scale,
            CoordMode::TfCropAndResize => {
                let (s, e) = roi;
                let x = if ow == 1.0 { (e - s) * (din - 1.0) / 2.0 } else { o * (e - s) * (din - 1.0) / (ow - 1.0) };
                x + s * (din - 1.0)
            }
        }
    }

    fn round(&self, x: f64, scale: f64) -> f64 {
        match self.nearest {
            NearestMode::Simple => {
                if scale < 1.0 {
                    x.ceil()
                } else {
                    x.floor()
                }
            }
            NearestMode::Floor => x.floor(),
            NearestMode::Ceil => x.ceil(),
            NearestMode::RoundPreferFloor => {
                if x.fract().abs() == 0.5 {
                    x.floor()
                } else {
                    x.round()
                }
            }
            NearestMode::RoundPreferCeil => {
                if x.fract().abs() == 0.5 {
                    x.ceil()
                } else {
                    x.round()
                }
            }
        }
    }

    /// Filter weights for taps at offsets `first..first + n` from `i0`, where the sample point is
    /// `i0 + ratio` with `ratio` in (0, 1] (the ONNX reference's convention: the left neighbour is
    /// preferred on exact hits).
    fn filter(&self, ratio: f64, scale: f64) -> (i64, Vec<f64>) {
        let a = self.cubic_coeff_a as f64;
        let cubic = |x: f64| {
            let x = x.abs();
            if x <= 1.0 {
                ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
            } else if x < 2.0 {
                ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
            } else {
                0.0
            }
        };
        let (first, weights): (i64, Vec<f64>) = match (self.mode, self.antialias) {
            (ResizeMode::Linear, false) | (ResizeMode::Nearest, _) => (0, vec![1.0 - ratio, ratio]),
            (ResizeMode::Cubic, false) => (-1, (-1..3).map(|i| cubic(i as f64 - ratio)).collect()),
            (ResizeMode::Linear, true) => {
                // A triangle stretched by 1/scale when shrinking.
                let s = scale.min(1.0);
                let first = (-1.0 / s).floor() as i64 + 1;
                let n = 2 - 2 * first;
                (first, (first..first + n).map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0)).collect())
            }
            (ResizeMode::Cubic, true) => {
                let s = scale.min(1.0);
                let first = (-2.0 / s).floor() as i64 + 1;
                let n = 2 - 2 * first;
                (first, (first..first + n).map(|i| cubic(s * (i as f64 - ratio))).collect())
            }
        };
        if self.antialias {
            let sum: f64 = weights.iter().sum();
            return (first, weights.into_iter().map(|w| w / sum).collect());
        }
        (first, weights)
    }

    /// Per output index of one axis: the input taps and weights, or `None` to extrapolate.
    fn taps(&self, d_in: usize, d_out: usize, scale: f64, roi: (f64, f64)) -> Vec<Option<Vec<(usize, f64)>>> {
        (0..d_out)
            .map(|o| {
                let x = self.source(o, d_in, d_out, scale, roi);
                let last = d_in as f64 - 1.0;
                if self.coord == CoordMode::TfCropAndResize && (x < 0.0 || x > last) {
                    return None;
                }
                if self.mode == ResizeMode::Nearest {
                    return Some(vec![(self.round(x, scale).clamp(0.0, last) as usize, 1.0)]);
                }
                let i0 = x.ceil() - 1.0;
                let (first, mut weights) = self.filter(x - i0, scale);
                let base = i0 as i64 + first;
                if self.exclude_outside && self.mode == ResizeMode::Cubic {
                    for (k, w) in weights.iter_mut().enumerate() {
                        let i = base + k as i64;
                        if i < 0 || i > last as i64 {
                            *w = 0.0;
                        }
                    }
                    let sum: f64 = weights.iter().sum();
                    weights.iter_mut().for_each(|w| *w /= sum);
                }
                // Taps outside the input repeat the edge.
                Some(
                    weights
                        .into_iter()
                        .enumerate()
                        .map(|(k, w)| ((base + k as i64).clamp(0, last as i64) as usize, w))
                        .collect(),
                )
            })
            .collect()
    }
}

/// One separable pass of a resize: axis `axis` goes from `d_in` to `d_out`; per output index, the
/// input taps and weights, or `None` where the output takes the extrapolation value.
#[derive(Clone, Debug)]
pub struct ResizePass {
    pub axis: usize,
    pub d_in: usize,
    pub d_out: usize,
    /// The axis' scale (given, or derived from the sizes).
    pub scale: f64,
    pub taps: Vec<Option<Vec<(usize, f64)>>>,
}

impl Resize {
    /// The axis-by-axis passes that resize a tensor of `shape` (axes left unchanged are skipped).
    /// Resize is separable in every mode, so this is its whole meaning.
    pub fn passes(
        &self,
        shape: &[usize],
        roi: Option<&[f64]>,
        scales: Option<&[f64]>,
        sizes: Option<&[i64]>,
    ) -> Result<Vec<ResizePass>, OpError> {
        let ks = crate::shape::known_shape(shape);
        let (out, sc) = self.plan(&ks, scales, sizes)?;
        let out: Vec<usize> = out.iter().filter_map(Dim::known).collect();
        let rank = shape.len();
        let mut passes = vec![];
        for ax in 0..rank {
            if shape[ax] == out[ax] && sc[ax] == 1.0 && self.coord != CoordMode::TfCropAndResize {
                continue;
            }
            let roi = match (roi, self.roi_index(rank, ax, roi.map_or(0, <[f64]>::len))?) {
                (Some(r), Some((s, e))) => (r[s], r[e]),
                _ => (0.0, 1.0),
            };
            let taps = self.taps(shape[ax], out[ax], sc[ax], roi);
            passes.push(ResizePass { axis: ax, d_in: shape[ax], d_out: out[ax], scale: sc[ax], taps });
        }
        Ok(passes)
    }

    /// Where axis `ax`'s region of interest (start, end) sits in a roi of `len` values (starts,
    /// then ends, one per resized axis), or `None` when the roi does not apply: any other
    /// length, or an axis not resized, take the whole axis (0, 1).
    pub fn roi_index(&self, rank: usize, ax: usize, len: usize) -> Result<Option<(usize, usize)>, OpError> {
        let axes: Vec<usize> = match &self.axes {
            Some(a) => a.iter().map(|&v| norm_axis(v, rank)).collect::<Result<_, _>>()?,
            None => (0..rank).collect(),
        };
        Ok(match axes.iter().position(|&a| a == ax) {
            Some(i) if len == 2 * axes.len() => Some((i, axes.len() + i)),
            _ => None,
        })
    }
}

impl OpDef for Resize {
    fn name(&self) -> &'static str {
        "Resize"
    }

    fn infer(&mut self, cx: &InferCx) -> Result<Vec<TensorType>, OpError> {
        cx.arity(1, 4)?;
        let x = cx.ty(0)?;
        expect_float(x, "input")?;
        let scales = cx.const_floats(2, "scales")?;
        let sizes = cx.const_ints(3, "sizes")?;
        let (out, _) = self.plan(&x.shape, scales.as_deref(), sizes.as_deref())?;
        Ok(vec![TensorType::new(x.dtype, out)])
    }

    fn eval(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>, OpError> {
        let x = input(inputs, 0)?;
        let roi = opt_input(inputs, 1).map(|t| t.to_f64s()).transpose()?;
        let scales = opt_input(inputs, 2).map(|t| t.to_f64s()).transpose()?;
        let sizes = opt_input(inputs, 3).map(|t| t.to_i64s()).transpose()?;
        let passes = self.passes(x.shape(), roi.as_deref(), scales.as_deref(), sizes.as_deref())?;
        let mut cur = x.to_f64s()?;
        let mut shape = x.shape().to_vec();
        let ev = self.extrapolation_value as f64;
        for p in passes {
            let outer: usize = shape[..p.axis].iter().product();
            let inner: usize = shape[p.axis + 1..].iter().product();
            let mut next = vec![0f64; outer * p.d_out * inner];
            for o in 0..outer {
                for (j, t) in p.taps.iter().enumerate() {
                    let dst = &mut next[(o * p.d_out + j) * inner..][..inner];
                    match t {
                        None => dst.fill(ev),
                        Some(t) => {
                            for &(i, w) in t {
                                let src = &cur[(o * p.d_in + i) * inner..][..inner];
                                for (d, s) in dst.iter_mut().zip(src) {
                                    *d += w * s;
                                }
                            }
                        }
                    }
                }
            }
            cur = next;
            shape[p.axis] = p.d_out;
        }
        Ok(vec![from_f64(x.dtype(), shape, cur)])
    }

    fn attrs(&self) -> AttrList {
        let mut a = vec![
            (
                "mode",
                AttrValue::Str(
                    match self.mode {
                        ResizeMode::Nearest => "nearest",
                        ResizeMode::Linear => "linear",
                        ResizeMode::Cubic => "cubic",
                    }
                    .into(),
                ),
            ),
            ("coordinate_transformation_mode", AttrValue::Str(name_of(&COORD_MODES, self.coord).into())),
        ];
        if self.mode == ResizeMode::Nearest {
            a.push(("nearest_mode", AttrValue::Str(name_of(&NEAREST_MODES, self.nearest).into())));
        }
        if self.coord == CoordMode::TfCropAndResize {
            a.push(("extrapolation_value", AttrValue::Float(self.extrapolation_value)));
        }
        if self.mode == ResizeMode::Cubic {
            a.push(("cubic_coeff_a", AttrValue::Float(self.cubic_coeff_a)));
            a.push(("exclude_outside", AttrValue::Int(self.exclude_outside as i64)));
        }
        if self.antialias {
            a.push(("antialias", AttrValue::Int(1)));
        }
        if let Some(axes) = &self.axes {
            a.push(("axes", AttrValue::Ints(axes.clone())));
        }
        match self.aspect {
            AspectPolicy::Stretch => {}
            AspectPolicy::NotLarger => a.push(("keep_aspect_ratio_policy", AttrValue::Str("not_larger".into()))),
            AspectPolicy::NotSmaller => a.push(("keep_aspect_ratio_policy", AttrValue::Str("not_smaller".into()))),
        }
        a
    }
}
