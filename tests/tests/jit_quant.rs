//! The quantized ops through the JIT, as all-pairs tables against the interpreter (integer
//! outputs compared exactly, f32 ones bit for bit):
//! - QuantizeLinear and DequantizeLinear: every integer type, per-tensor scales given as scalars
//!   and as one-element vectors, per-axis scales on each axis (negative axes too), the zero point
//!   omitted, empty, constant or computed at run time, and inputs that land exactly halfway
//!   between two integers (round half to even) or far outside the type's range (saturation);
//! - the integer convolutions (QLinearConv, ConvInteger) and matrix products (QLinearMatMul,
//!   MatMulInteger, QGemm): u8 and i8 operands over their whole range, zero points per tensor,
//!   per channel, row or column, constant or computed at run time, weight scales per tensor or
//!   per channel, i32 biases that wrap, output scales that saturate some outputs, and the
//!   windows, groups, ranks, broadcasts and transposes each op takes.

use incept_ir::attrs::{AttrValue, Attrs};
use incept_ir::graph::ValueId;
use incept_ir::ops::quant::qrange;
use incept_ir::text::parse::SplitMix;
use incept_ir::{DType, Op, Tensor, interp};
use incept_tests::graphs::{Gen, extent, ints, random_of};
use incept_tests::pairwise::{Dim, Row};
use incept_tests::tables::{Table, optional, valid_order};

/// Scales with few mantissa bits: `k * (s / 2) / s` is exactly `k / 2`, so ties are ties.
const SCALES: [f32; 4] = [0.1875, 0.75, 3.0, 0.046875];

fn dtype(name: &str) -> DType {
    DType::from_name(name).expect("a dtype name")
}

/// Zero points near either end of the type's range, so saturation happens on both sides.
fn zero_points(d: DType, n: usize) -> Tensor {
    let pick = |i: usize| -> i64 {
        match (d, i % 3) {
            (DType::I8, 0) => 120,
            (DType::I8, 1) => -125,
            (DType::U8, 0) => 3,
            (DType::U8, 1) => 250,
            (DType::I16, 0) => 32760,
            (DType::U16, 0) => 65530,
            (DType::U16, _) => 2,
            (DType::I32, _) => 0,
            _ => -4,
        }
    };
    let v: Vec<i64> = (0..n).map(pick).collect();
    let t = Tensor::from_vec(vec![n], v);
    incept_ir::ops::Op::Cast(incept_ir::ops::Cast { to: d }).eval(&[Some(&t)]).expect("cast").remove(0)
}

fn quant_table() -> Table {
    let dims = vec![
        Dim::new("op", &["quantize", "dequantize"]),
        Dim::new("type", &["i8", "u8", "i16", "u16", "i32"]),
        Dim::new("params", &["scalar", "one", "axis_first", "axis_last", "axis_negative"]),
        Dim::new("zero", &["omitted", "empty", "const", "input"]),
        Dim::new("scale", &["const", "input"]),
        Dim::new("values", &["ties", "wide", "special"]),
        Dim::new("rank", &["1", "2", "4"]),
        // Dims of 2 to 5, or a last dim of 17 to 40 (whole vectors and a partial one).
        Dim::new("size", &["short", "long"]),
    ];
    Table::new(
        "quant",
        dims,
        |r| {
            // i32 is a dequantize input only, and takes no zero point but 0; an omitted zero
            // point before nothing is always in order; a per-axis row needs an axis.
            let i32_ok = r.get("type") != "i32" || (r.get("op") == "dequantize" && r.get("zero") != "input");
            let axis_ok =
                !r.get("params").starts_with("axis") || r.get("rank") != "1" || r.get("params") == "axis_first";
            i32_ok && axis_ok && valid_order(&[r.get("zero")])
        },
        |r, d| d != "values" || r.get("op") == "quantize",
        build,
    )
    .exact()
}

fn build(g: &mut Gen, row: &Row) -> Option<ValueId> {
    let rank: usize = row.get("rank").parse().ok()?;
    let mut shape: Vec<usize> = (0..rank).map(|_| g.int(2, 5)).collect();
    if row.get("size") == "long" {
        shape[rank - 1] = g.int(17, 40);
    }
    let d = dtype(row.get("type"));
    let quantize = row.get("op") == "quantize";
    let (axis, n): (i64, usize) = match row.get("params") {
        "scalar" => (1, 0),
        "one" => (1, 1),
        "axis_first" => (0, shape[0]),
        "axis_last" => (rank as i64 - 1, shape[rank - 1]),
        _ => (-2, shape[rank - 2]),
    };
    let s0 = SCALES[g.int(0, SCALES.len() - 1)];
    let scales: Vec<f32> = (0..n.max(1)).map(|i| s0 * [1.0, 2.0, 0.5][i % 3]).collect();
    let scale_t = if n == 0 { Tensor::scalar(scales[0]) } else { Tensor::from_vec(vec![n], scales.clone()) };
    let scale = match row.get("scale") {
        "const" => g.konst(scale_t),
        // Computed at run time: an input times one, so no pass can fold it.
        _ => {
            let one = g.input(&[]);
            let zero = g.konst(Tensor::scalar(0f32));
            let z = g.op("Mul", vec![], vec![Some(one), Some(zero)])?;
            let c = g.konst(scale_t);
            g.op("Add", vec![], vec![Some(z), Some(c)])?
        }
    };
    let zshape = if n == 0 { vec![] } else { vec![n] };
    let zero_t = zero_points(d, n.max(1)).reshaped(zshape.clone()).ok()?;
    let x = if quantize {
        // ties: small integers times half the (first) scale; wide: far beyond the range.
        let k = g.input_of(DType::I8, &shape);
        let kf = g.op("Cast", vec![("to", AttrValue::Int(DType::F32 as i64))], vec![Some(k)])?;
        let factor = if row.get("values") == "wide" { scales[0] * 9000.0 } else { scales[0] / 2.0 };
        let c = g.konst(Tensor::scalar(factor));
        let x = g.op("Mul", vec![], vec![Some(kf), Some(c)])?;
        if row.get("values") != "special" {
            return finish(g, row, x, quantize, d, axis, n, scale, zero_t, zshape);
        }
        // NaN, infinities and -0 along the last dim (at least two of them on every row).
        let last = shape[rank - 1];
        let special: Vec<f32> = (0..last).map(|i| [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0][i % 4]).collect();
        let sp = g.konst(Tensor::from_vec(vec![last], special));
        g.op("Add", vec![], vec![Some(x), Some(sp)])?
    } else {
        g.input_of(d, &shape)
    };
    finish(g, row, x, quantize, d, axis, n, scale, zero_t, zshape)
}

/// The Q or DQ node itself, on `x` with the row's zero point form.
#[allow(clippy::too_many_arguments)]
fn finish(
    g: &mut Gen,
    row: &Row,
    x: ValueId,
    quantize: bool,
    d: DType,
    axis: i64,
    n: usize,
    scale: ValueId,
    zero_t: Tensor,
    zshape: Vec<usize>,
) -> Option<ValueId> {
    let mut ins = vec![Some(x), Some(scale)];
    let zero_form = row.get("zero");
    optional(zero_form, &mut ins, || match zero_form {
        "const" => g.konst(zero_t.clone()),
        // A zero point computed at run time: Max(z, input) where the input is below every z.
        _ => {
            let low = g.konst(zero_t.clone());
            let other = g.input_of(d, &zshape);
            let neg = g.konst(zero_points(d, n.max(1)).reshaped(zshape.clone()).expect("reshape"));
            let m = g.op("Min", vec![], vec![Some(other), Some(neg)]).expect("min");
            g.op("Max", vec![], vec![Some(low), Some(m)]).expect("max")
        }
    });
    let op = if quantize { "QuantizeLinear" } else { "DequantizeLinear" };
    let mut attrs = vec![("axis", AttrValue::Int(axis))];
    if quantize && zero_form != "const" && zero_form != "input" {
        attrs.push(("output_dtype", AttrValue::Int(d as i64)));
    }
    g.op(op, attrs, ins)
}

#[test]
fn quantize_and_dequantize() {
    quant_table().passes();
}

/// A check of the checks: with the output's producer corrupted, every row of every table must
/// fail.
#[test]
fn every_row_catches_a_corrupted_output() {
    for table in [quant_table(), conv_table(), matmul_table()] {
        let (n, _, passed) = table.run(true);
        assert!(
            passed.is_empty(),
            "{}: {} of {n} rows pass with a corrupted output: {passed:?}",
            table.name,
            passed.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The integer convolutions and matrix products.

/// Scale of the f32 inputs quantized to full-range operands: [-1, 1) spans about 292 steps, so
/// about one value in sixteen lands on each end of the range.
const FULL_SCALE: f32 = 0.0068359375;

/// Integers as a tensor of `d` (u8, i8 or i32), which holds them.
fn typed(d: DType, shape: Vec<usize>, v: &[i64]) -> Tensor {
    match d {
        DType::U8 => Tensor::from_vec(shape, v.iter().map(|&x| x as u8).collect::<Vec<_>>()),
        DType::I8 => Tensor::from_vec(shape, v.iter().map(|&x| x as i8).collect::<Vec<_>>()),
        _ => Tensor::from_vec(shape, v.iter().map(|&x| x as i32).collect::<Vec<_>>()),
    }
}

/// One value for a whole tensor, as ONNX Runtime takes it: a scalar or a one-element vector.
fn one_shape(g: &mut Gen) -> Vec<usize> {
    if g.coin() { vec![] } else { vec![1] }
}

/// A constant of one value, as a scalar or a one-element vector.
fn one_value(g: &mut Gen, t: Tensor) -> ValueId {
    let shape = one_shape(g);
    g.konst(t.reshaped(shape).expect("one value"))
}

/// An operand's zero point: at either end of the range, next to one, or in the middle (with
/// full-range operands, `x - zero` then spans up to 255 either way).
fn zero_value(g: &mut Gen, d: DType) -> i64 {
    if d == DType::U8 { g.pick(&[0, 3, 128, 250, 255]) } else { g.pick(&[-128, -5, 0, 100, 127]) }
}

/// An output's zero point: at the low end (a ReLU folded in), or with room on both sides.
fn out_zero(g: &mut Gen, d: DType) -> i64 {
    if d == DType::U8 { g.pick(&[0, 128, 200]) } else { g.pick(&[-128, 0, 50]) }
}

/// Values over the whole range of `d`, a quarter of them on its ends.
fn full_values(g: &mut Gen, d: DType, n: usize) -> Vec<i64> {
    let (lo, hi) = qrange(d).expect("a quantized type");
    (0..n)
        .map(|_| match g.int(0, 7) {
            0 => lo as i64,
            1 => hi as i64,
            _ => lo as i64 + g.int(0, (hi - lo) as usize) as i64,
        })
        .collect()
}

/// An integer operand computed at run time: a graph input of `d` (`random_of`'s small
/// integers), or (`full`) an f32 input quantized to span the whole range, piled up on both
/// ends, where pairing u8 by i8 products in 16 bits would saturate.
fn int_operand(g: &mut Gen, d: DType, shape: &[usize], full: bool) -> Option<ValueId> {
    if !full {
        return Some(g.input_of(d, shape));
    }
    let f = g.input(shape);
    let s = g.konst(Tensor::scalar(FULL_SCALE));
    let z = g.konst(typed(d, vec![], &[if d == DType::U8 { 128 } else { 0 }]));
    g.op("QuantizeLinear", vec![], vec![Some(f), Some(s), Some(z)])
}

/// An operand: a constant over the whole range (`konst`), or computed at run time.
fn operand(g: &mut Gen, d: DType, shape: &[usize], konst: bool, full: bool) -> Option<ValueId> {
    if !konst {
        return int_operand(g, d, shape, full);
    }
    let v = full_values(g, d, shape.iter().product());
    Some(g.konst(typed(d, shape.to_vec(), &v)))
}

/// A zero point of `d` for a whole tensor (a scalar or a one-element vector): a constant, or
/// (`run_time`) Max(z, Min(input, z)), which is always z but computed at run time, so that no
/// pass can fold it.
fn zero_node(g: &mut Gen, d: DType, run_time: bool) -> Option<ValueId> {
    let (v, shape) = ([zero_value(g, d)], one_shape(g));
    let z = g.konst(typed(d, shape.clone(), &v));
    if !run_time {
        return Some(z);
    }
    let other = g.input_of(d, &shape);
    let again = g.konst(typed(d, shape, &v));
    let m = g.op("Min", vec![], vec![Some(other), Some(again)])?;
    g.op("Max", vec![], vec![Some(z), Some(m)])
}

/// A constant zero point of `d` per index of `n` ("channel", "column", "row"), or one value
/// ("tensor"; "zero": 0) of `one`'s shape, or none ("absent", "omitted").
fn vector_zero(g: &mut Gen, d: DType, form: &str, n: usize, one: &[usize]) -> Option<ValueId> {
    let (v, shape): (Vec<i64>, Vec<usize>) = match form {
        "absent" | "omitted" => return None,
        "zero" => (vec![0], one.to_vec()),
        "tensor" => (vec![zero_value(g, d)], one.to_vec()),
        _ => ((0..n).map(|_| zero_value(g, d)).collect(), vec![n]),
    };
    Some(g.konst(typed(d, shape, &v)))
}

/// Scales per index of `n` (or one when `n` is `None`): `s0` times 1, 2, 0.5 in turn.
fn scales(s0: f32, n: Option<usize>) -> Vec<f32> {
    (0..n.unwrap_or(1)).map(|i| s0 * [1.0, 2.0, 0.5][i % 3]).collect()
}

/// An i32 bias (or QGemm's C) drawn before the sums it adds to are known: each value a fraction
/// of their spread, in thousandths; with more than one value, the last is near i32::MAX so that
/// its sums wrap around (as i32 hardware does).
struct BiasDraw {
    thousandths: Vec<i64>,
    below_max: usize,
}

impl BiasDraw {
    fn draw(g: &mut Gen, n: usize) -> BiasDraw {
        BiasDraw { thousandths: (0..n).map(|_| g.int(0, 2000) as i64 - 1000).collect(), below_max: g.int(0, 99) }
    }

    /// The values for sums of this spread, with (`wrap`) or without the one near i32::MAX
    /// (without, they are what the output scale is fitted to).
    fn values(&self, spread: f64, wrap: bool) -> Vec<i64> {
        let n = self.thousandths.len();
        let v = |(i, &t): (usize, &i64)| match wrap && n > 1 && i + 1 == n {
            true => i32::MAX as i64 - self.below_max as i64,
            false => (t as f64 * spread / 1000.0).round() as i64,
        };
        self.thousandths.iter().enumerate().map(v).collect()
    }
}

/// The integer sums `op` (ConvInteger or MatMulInteger, on values of the graph, the first two
/// transposed where `transpose` says) gives on the inputs `check` will feed the graph: it draws
/// them with `random_of`, input by input, from the generator as the build leaves it, so every
/// draw of the build must come before this. (Should `check` draw otherwise, the rows stay valid,
/// only their output scales fit less well.)
fn predicted_sums(
    g: &Gen,
    op: &str,
    attrs: Vec<(&str, AttrValue)>,
    ins: Vec<Option<ValueId>>,
    transpose: [bool; 2],
) -> Option<Vec<i32>> {
    let mut rng = SplitMix(g.rng.0);
    let inputs: Vec<Tensor> =
        g.g.input_values()
            .into_iter()
            .map(|v| Some(random_of(&mut rng, g.g.ty(v).dtype, g.g.ty(v).static_dims()?)))
            .collect::<Option<_>>()?;
    let mut graph = g.g.clone();
    let mut add = |name: &str, op: &str, attrs: Vec<(&str, AttrValue)>, ins: Vec<Option<ValueId>>| {
        let attrs = Attrs::new(attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        let op = Op::from_attrs(op, attrs).ok()?;
        let id = graph.add_node(name, op, ins, vec![format!("{name}_out")]).ok()?;
        Some(ValueId::new(id, 0))
    };
    let mut ins = ins;
    for (k, t) in transpose.into_iter().enumerate() {
        if t {
            ins[k] = Some(add(&format!("predicted_t{k}"), "Transpose", vec![], vec![ins[k]])?);
        }
    }
    let out = add("predicted_sums", op, attrs, ins)?;
    graph.set_outputs(vec![out]);
    let sums = interp::run(&graph, &inputs).ok()?.pop()?;
    Some(sums.to_i64s().ok()?.into_iter().map(|v| v as i32).collect())
}

/// The root mean square of sums (at least 1), the spread a bias is drawn in.
fn spread(sums: &[i32]) -> f64 {
    (sums.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / sums.len().max(1) as f64).sqrt().max(1.0)
}

/// An output scale at which a fifth or more of `values` (the final sums times their input
/// scales) saturate around `zero` and the rest do not: below each value's size over the room
/// on its side of the zero point, it saturates. Any f32, as real models' scales are (the
/// multiplier then has every mantissa bit; `tie_params` gives few).
fn out_scale(values: &[f64], zero: i64, (lo, hi): (i32, i32)) -> f32 {
    let room = |v: f64| if v > 0.0 { (hi as i64 - zero) as f64 } else { (lo as i64 - zero) as f64 };
    let mut at: Vec<f64> = values.iter().map(|&v| v / room(v)).filter(|r| r.is_finite() && *r > 0.0).collect();
    at.sort_by(f64::total_cmp);
    at.get(at.len() * 4 / 5).copied().unwrap_or(1.0) as f32
}

/// The scale and zero point at which the most `values` fall exactly halfway between two
/// integers and round to inside the range: `base` times a power of two (2 to 2^30, the smallest
/// among equals) and any zero point (the drawn one among equals), or `None` when none gives a tie.
fn tie_params(values: &[f64], base: f32, drawn: i64, (lo, hi): (i32, i32)) -> Option<(f32, i64)> {
    let scale = |e: i32| base as f64 * 2f64.powi(e);
    let zeros: Vec<i64> = std::iter::once(drawn).chain(lo as i64..=hi as i64).collect();
    let mut best = (0, None);
    for e in 1..=30 {
        let ties: Vec<f64> = values.iter().map(|&v| v / scale(e)).filter(|q| q.abs().fract() == 0.5).collect();
        for &z in &zeros {
            let inside = ties.iter().filter(|&&q| q + (z as f64) > lo as f64 && q + (z as f64) < hi as f64).count();
            if inside > best.0 {
                best = (inside, Some((scale(e) as f32, z)));
            }
        }
    }
    best.1
}

/// The drawn output zero point, unless it leaves no room on the side where most `values` lie
/// (a ReLU's zero point under negative sums): then the middle of the range, so that the
/// outputs are not all on one end.
fn fit_zero(drawn: i64, values: &[f64], (lo, hi): (i32, i32)) -> i64 {
    let stuck = values.iter().filter(|&&v| (v > 0.0 && drawn == hi as i64) || (v < 0.0 && drawn == lo as i64)).count();
    if stuck * 4 > values.len() * 3 { (lo + hi + 1) as i64 / 2 } else { drawn }
}

/// The output's scale and zero point for `values` (the final sums times their input scales, the
/// first of which is `base`): those `tie_params` finds (`form` "ties", the multipliers then
/// powers of two, so that products are exact), else the zero point `fit_zero` gives and the
/// scale `out_scale` fits to the values.
fn out_params(form: &str, values: &[f64], base: f32, drawn: i64, range: (i32, i32)) -> (f32, i64) {
    let tie = if form == "ties" { tie_params(values, base, drawn, range) } else { None };
    tie.unwrap_or_else(|| {
        let zero = fit_zero(drawn, values, range);
        (out_scale(values, zero, range), zero)
    })
}

/// Rows that differ only in dimensions they do not use are one row: those stay at their first
/// level (which keeps the candidates few).
fn canonical(r: &Row, active: fn(&Row, &str) -> bool) -> bool {
    r.dims.iter().zip(&r.levels).all(|(d, &l)| l == 0 || active(r, d.name))
}

fn conv_table() -> Table {
    let dims = vec![
        Dim::new("op", &["qlinear", "integer"]),
        Dim::new("x_type", &["u8", "i8"]),
        Dim::new("w_type", &["u8", "i8"]),
        Dim::new("x_zero", &["omitted", "empty", "const", "input"]),
        // QLinearConv's weight scale is per tensor or per channel as their zero point is.
        // "symmetric": zero points of 0 (ONNX Runtime's default for i8 weights) per tensor or
        // per channel, of constant i8 weights in an ungrouped QLinearConv with a constant input
        // zero point, which the int8 tile takes: every other level meets it.
        Dim::new("w_zero", &["omitted", "zero", "symmetric", "tensor", "channel"]),
        Dim::new("bias", &["absent", "present"]),
        Dim::new("y_type", &["u8", "i8"]),
        Dim::new("y_scale", &["fit", "ties"]),
        // A fused Relu or Clip (fuse-qdq's `incept_clamp`): the output saturates inside its range.
        Dim::new("clamp", &["none", "relu", "clip"]),
        Dim::new("kernel", &["1x1", "3x3", "1d"]),
        Dim::new("stride", &["1", "2"]),
        Dim::new("pads", &["0", "1", "asym", "same_lower"]),
        Dim::new("dilation", &["1", "2"]),
        Dim::new("groups", &["1", "2", "depthwise"]),
        Dim::new("batch", &["1", "2"]),
        Dim::new("weights", &["const", "input"]),
        Dim::new("values", &["small", "full"]),
    ];
    Table::new("int_conv", dims, |r| canonical(r, conv_active) && conv_valid(r), conv_active, build_conv).exact()
}

/// The output's parameters are QLinearConv's; a 1x1 kernel has no dilation.
fn conv_active(r: &Row, d: &str) -> bool {
    match d {
        "bias" | "y_type" | "y_scale" | "clamp" => r.get("op") == "qlinear",
        "dilation" => r.get("kernel") != "1x1",
        _ => true,
    }
}

fn conv_valid(r: &Row) -> bool {
    let (xz, wz) = (r.get("x_zero"), r.get("w_zero"));
    let qlinear = r.get("op") == "qlinear";
    let int8_tile =
        qlinear && r.get("w_type") == "i8" && r.get("weights") == "const" && r.get("groups") == "1" && xz == "const";
    if wz == "symmetric" && !int8_tile {
        return false;
    }
    // QLinearConv's zero points are required (as in ONNX).
    if qlinear { matches!(xz, "const" | "input") && wz != "omitted" } else { valid_order(&[xz, wz]) }
}

/// A conv row's shapes and window attributes.
struct ConvGeometry {
    x: Vec<usize>,
    w: Vec<usize>,
    attrs: Vec<(&'static str, AttrValue)>,
}

fn conv_geometry(g: &mut Gen, row: &Row) -> Option<ConvGeometry> {
    let nsp = if row.get("kernel") == "1d" { 1 } else { 2 };
    let k = if row.get("kernel") == "1x1" { 1 } else { 3 };
    let s: usize = row.get("stride").parse().ok()?;
    let d: usize = row.get("dilation").parse().ok()?;
    let (begin, end) = match (row.get("pads"), nsp) {
        ("1", _) => (vec![1; nsp], vec![1; nsp]),
        ("asym", 1) => (vec![0], vec![1]),
        ("asym", _) => (vec![1, 0], vec![0, 2]),
        _ => (vec![0; nsp], vec![0; nsp]),
    };
    let (c, m, group) = match row.get("groups") {
        // A few output channels, or a 12-row register tile's worth and one past it.
        "1" => (g.int(1, 4), g.pick(&[1, 2, 3, 4, 12, 13]), 1),
        "2" => (2 * g.int(1, 3), 2 * g.int(1, 2), 2),
        _ => {
            let c = g.int(2, 4);
            (c, c * g.int(1, 2), c)
        }
    };
    let n: usize = row.get("batch").parse().ok()?;
    let mut x = vec![n, c];
    x.extend((0..nsp).map(|i| extent(g, k, s, d, begin[i], end[i])));
    let mut w = vec![m, c / group];
    w.extend(vec![k; nsp]);
    let mut attrs = vec![("strides", ints(&vec![s; nsp])), ("dilations", ints(&vec![d; nsp]))];
    if group != 1 || g.coin() {
        attrs.push(("group", AttrValue::Int(group as i64)));
    }
    // The kernel shape may be left to the weights.
    if g.coin() {
        attrs.push(("kernel_shape", ints(&vec![k; nsp])));
    }
    match row.get("pads") {
        "same_lower" => attrs.push(("auto_pad", AttrValue::Str("SAME_LOWER".into()))),
        _ => attrs.push(("pads", ints(&[begin, end].concat()))),
    }
    Some(ConvGeometry { x, w, attrs })
}

fn build_conv(g: &mut Gen, row: &Row) -> Option<ValueId> {
    let qlinear = row.get("op") == "qlinear";
    let (xt, wt) = (dtype(row.get("x_type")), dtype(row.get("w_type")));
    let geo = conv_geometry(g, row)?;
    let m = geo.w[0];
    let full = row.get("values") == "full";
    let x = int_operand(g, xt, &geo.x, full)?;
    let w = operand(g, wt, &geo.w, row.get("weights") == "const", full)?;
    let (x_form, w_form) = (row.get("x_zero"), row.get("w_zero"));
    let x_zero = match x_form {
        "const" | "input" => Some(zero_node(g, xt, x_form == "input")?),
        _ => None,
    };
    let per_channel = qlinear && (w_form == "channel" || (w_form == "symmetric" && g.coin()));
    let w_scale_shape = if per_channel { vec![m] } else { one_shape(g) };
    let w_zero = match w_form {
        "symmetric" => {
            let zeros = vec![0; w_scale_shape.iter().product()];
            Some(g.konst(typed(wt, w_scale_shape.clone(), &zeros)))
        }
        _ => vector_zero(g, wt, w_form, m, &w_scale_shape),
    };
    if !qlinear {
        let mut ins = vec![Some(x), Some(w)];
        optional(x_form, &mut ins, || x_zero.expect("a zero point"));
        optional(w_form, &mut ins, || w_zero.expect("a zero point"));
        return g.op("ConvInteger", geo.attrs, ins);
    }
    let (xs, ws0) = (g.pick(&SCALES), g.pick(&SCALES));
    let ws = scales(ws0, per_channel.then_some(m));
    let xs_node = one_value(g, Tensor::scalar(xs));
    let ws_node = g.konst(Tensor::from_vec(w_scale_shape, ws.clone()));
    let yt = dtype(row.get("y_type"));
    let (drawn_zero, yz_shape, ys_shape) = (out_zero(g, yt), one_shape(g), one_shape(g));
    let bias = (row.get("bias") == "present").then(|| BiasDraw::draw(g, m));
    // Every draw is made: the output scale and the bias fit the sums the inputs will give.
    let sums = predicted_sums(g, "ConvInteger", geo.attrs.clone(), vec![Some(x), Some(w), x_zero, w_zero], [false; 2])?;
    let bias = |wrap: bool| bias.as_ref().map_or_else(|| vec![0; m], |b| b.values(spread(&sums), wrap));
    let plane = sums.len() / geo.x[0] / m;
    let channel = |i: usize| (i / plane) % m;
    let tame = bias(false);
    let values: Vec<f64> = sums
        .iter()
        .enumerate()
        .map(|(i, &s)| s.wrapping_add(tame[channel(i)] as i32) as f64 * (xs * ws[channel(i) % ws.len()]) as f64)
        .collect();
    let (ys, yz) = out_params(row.get("y_scale"), &values, xs * ws0, drawn_zero, qrange(yt)?);
    let ys_node = g.konst(Tensor::from_vec(ys_shape, vec![ys]));
    let yz_node = g.konst(typed(yt, yz_shape, &[yz]));
    let mut ins = vec![Some(x), Some(xs_node), x_zero, Some(w), Some(ws_node), w_zero, Some(ys_node), Some(yz_node)];
    if row.get("bias") == "present" {
        ins.push(Some(g.konst(typed(DType::I32, vec![m], &bias(true)))));
    }
    // Bounds inside the outputs' spread, so that both ends clip some of them.
    let (lo, hi) = qrange(yt)?;
    let clamp = match row.get("clamp") {
        "relu" => Some((yz, hi as i64)),
        "clip" => Some(((yz - g.int(1, 20) as i64).max(lo as i64), (yz + g.int(1, 40) as i64).min(hi as i64))),
        _ => None,
    };
    let mut attrs = geo.attrs;
    attrs.extend(clamp.map(|(a, b)| ("incept_clamp", AttrValue::Ints(vec![a, b]))));
    g.op("QLinearConv", attrs, ins)
}

fn matmul_table() -> Table {
    let dims = vec![
        Dim::new("op", &["qlinear", "integer", "qgemm"]),
        Dim::new("a_type", &["u8", "i8"]),
        Dim::new("b_type", &["u8", "i8"]),
        // A's rank by B's, the 3-D and 4-D ones broadcasting batch dims (of 1 or absent); or
        // QGemm's transposes (2x2 is its plain one).
        Dim::new("shape", &["2x2", "1x1", "1x3", "2x1", "3x2", "2x3", "4x3", "tn", "nt", "tt"]),
        Dim::new("a_zero", &["absent", "tensor", "row", "input"]),
        Dim::new("b_zero", &["absent", "tensor", "column"]),
        Dim::new("b_scale", &["tensor", "column"]),
        Dim::new("alpha", &["1", "0.5"]),
        Dim::new("c", &["absent", "scalar", "n", "m1", "mn"]),
        // The output: quantized to u8 or i8, or (QGemm) f32 unscaled or divided by y_scale.
        Dim::new("y", &["u8", "i8", "f32", "scaled"]),
        Dim::new("y_scale", &["fit", "ties"]),
        Dim::new("consts", &["b", "none", "a"]),
        Dim::new("values", &["small", "full"]),
    ];
    Table::new("int_matmul", dims, |r| canonical(r, matmul_active) && matmul_valid(r), matmul_active, build_matmul)
        .exact()
}

/// MatMulInteger has no scales; QGemm's attributes are its own.
fn matmul_active(r: &Row, d: &str) -> bool {
    let op = r.get("op");
    match d {
        "b_scale" | "y" => op != "integer",
        "y_scale" => op != "integer" && matches!(r.get("y"), "u8" | "i8"),
        "alpha" | "c" => op == "qgemm",
        _ => true,
    }
}

fn matmul_valid(r: &Row) -> bool {
    let transposes = matches!(r.get("shape"), "2x2" | "tn" | "nt" | "tt");
    if transposes != (r.get("op") == "qgemm") && r.get("shape") != "2x2" {
        return false;
    }
    match r.get("op") {
        "integer" => true,
        // Their zero points are required (a zero point per row is MatMulInteger's alone);
        // QLinearMatMul's output is quantized; QGemm's B zero point is shaped as B's scale.
        op => {
            matches!(r.get("a_zero"), "tensor" | "input")
                && r.get("b_zero") != "absent"
                && (op == "qgemm" || matches!(r.get("y"), "u8" | "i8"))
                && (op == "qlinear" || (r.get("b_zero") == "column") == (r.get("b_scale") == "column"))
        }
    }
}

/// A's and B's shapes for (M, K, N).
fn matmul_shapes(row: &Row, m: usize, k: usize, n: usize) -> (Vec<usize>, Vec<usize>) {
    if row.get("op") == "qgemm" {
        let [ta, tb] = qgemm_transposes(row);
        let a = if ta { vec![k, m] } else { vec![m, k] };
        let b = if tb { vec![n, k] } else { vec![k, n] };
        return (a, b);
    }
    match row.get("shape") {
        "1x1" => (vec![k], vec![k]),
        "1x3" => (vec![k], vec![2, k, n]),
        "2x1" => (vec![m, k], vec![k]),
        "3x2" => (vec![2, m, k], vec![k, n]),
        "2x3" => (vec![m, k], vec![3, k, n]),
        "4x3" => (vec![2, 1, m, k], vec![3, k, n]),
        _ => (vec![m, k], vec![k, n]),
    }
}

/// QGemm's transA and transB.
fn qgemm_transposes(row: &Row) -> [bool; 2] {
    let t = row.get("shape");
    [t.starts_with('t'), t.ends_with('t')]
}

/// QGemm's C for an [M, N] output: its shape, and its row and column strides (0 where it
/// broadcasts).
fn c_layout(form: &str, m: usize, n: usize) -> Option<(Vec<usize>, usize, usize)> {
    Some(match form {
        "scalar" => (vec![], 0, 0),
        "n" => (vec![n], 0, 1),
        "m1" => (vec![m, 1], 1, 0),
        "mn" => (vec![m, n], n, 1),
        _ => return None,
    })
}

fn build_matmul(g: &mut Gen, row: &Row) -> Option<ValueId> {
    let op = row.get("op");
    let (at, bt) = (dtype(row.get("a_type")), dtype(row.get("b_type")));
    let (m, k, n) = (g.int(1, 5), g.int(1, 6), g.int(1, 5));
    let (ash, bsh) = matmul_shapes(row, m, k, n);
    let rows = if ash.len() >= 2 { m } else { 1 };
    let cols = if bsh.len() >= 2 { n } else { 1 };
    let (full, consts) = (row.get("values") == "full", row.get("consts"));
    let a = operand(g, at, &ash, consts == "a", full)?;
    let b = operand(g, bt, &bsh, consts == "b", full)?;
    let a_zero = match row.get("a_zero") {
        form @ ("tensor" | "input") => Some(zero_node(g, at, form == "input")?),
        form => vector_zero(g, at, form, rows, &[]),
    };
    // B's scale and zero point: per column, or one value (QGemm: both of one shape).
    let b_one = one_shape(g);
    let b_zero = vector_zero(g, bt, row.get("b_zero"), cols, &b_one);
    if op == "integer" {
        let ins = trimmed(vec![Some(a), Some(b), a_zero, b_zero]);
        return g.op("MatMulInteger", vec![], ins);
    }
    let (sa, sb0) = (g.pick(&SCALES), g.pick(&SCALES));
    let sa_node = one_value(g, Tensor::scalar(sa));
    let per_col = row.get("b_scale") == "column";
    let sb = scales(sb0, per_col.then_some(cols));
    let sb_node = g.konst(Tensor::from_vec(if per_col { vec![cols] } else { b_one }, sb.clone()));
    let alpha: f32 = if op == "qgemm" { row.get("alpha").parse().ok()? } else { 1.0 };
    let y = row.get("y");
    // The output zero point's type and drawn value (none for an f32 output), and the shapes.
    let yt = matches!(y, "u8" | "i8").then(|| dtype(y));
    let drawn_zero = yt.map_or(0, |t| out_zero(g, t));
    let (yz_shape, ys_shape) = (one_shape(g), one_shape(g));
    let c_form = if op == "qgemm" { c_layout(row.get("c"), m, n) } else { None };
    let c_draw = c_form.as_ref().map(|(s, _, _)| BiasDraw::draw(g, s.iter().product()));
    // Every draw is made: the output scale and C fit the sums the inputs will give.
    let transpose = if op == "qgemm" { qgemm_transposes(row) } else { [false; 2] };
    let sums = predicted_sums(g, "MatMulInteger", vec![], vec![Some(a), Some(b), a_zero, b_zero], transpose)?;
    let c = |wrap: bool| c_draw.as_ref().map_or_else(|| vec![0], |d| d.values(spread(&sums), wrap));
    let at_c = |i: usize| c_form.as_ref().map_or(0, |&(_, rs, cs)| (i / cols) % m * rs + i % cols * cs);
    let tame = c(false);
    let values: Vec<f64> = sums
        .iter()
        .enumerate()
        .map(|(i, &s)| s.wrapping_add(tame[at_c(i)] as i32) as f64 * ((alpha * sa) * sb[(i % cols) % sb.len()]) as f64)
        .collect();
    let range = yt.map_or(Some((-128, 127)), qrange)?;
    let (ys, yz) = out_params(row.get("y_scale"), &values, alpha * sa * sb0, drawn_zero, range);
    let ys_node = (y != "f32").then(|| g.konst(Tensor::from_vec(ys_shape, vec![ys])));
    let y_zero = yt.map(|t| g.konst(typed(t, yz_shape, &[yz])));
    if op == "qlinear" {
        let ins = vec![Some(a), Some(sa_node), a_zero, Some(b), Some(sb_node), b_zero, ys_node, y_zero];
        return g.op("QLinearMatMul", vec![], ins);
    }
    let c_node = c_form.map(|(s, _, _)| g.konst(typed(DType::I32, s, &c(true))));
    let mut attrs =
        vec![("transA", AttrValue::Int(transpose[0] as i64)), ("transB", AttrValue::Int(transpose[1] as i64))];
    if alpha != 1.0 {
        attrs.push(("alpha", AttrValue::Float(alpha)));
    }
    let ins = trimmed(vec![Some(a), Some(sa_node), a_zero, Some(b), Some(sb_node), b_zero, c_node, ys_node, y_zero]);
    g.op("QGemm", attrs, ins)
}

/// Inputs with the absent trailing ones omitted.
fn trimmed(mut ins: Vec<Option<ValueId>>) -> Vec<Option<ValueId>> {
    while matches!(ins.last(), Some(None)) {
        ins.pop();
    }
    ins
}

#[test]
fn integer_convolutions() {
    conv_table().passes();
}

#[test]
fn integer_matrix_products() {
    matmul_table().passes();
}

/// QLinearConv on the VNNI tile at the sizes where its packing takes the vector path (pointwise
/// convs with whole 32-position panels and whole channel quads, both input signs, channel counts
/// around a quad, a partial last panel): the plan must hold the tile, and every output byte must
/// equal the interpreter's.
#[test]
fn vnni_convs_match_the_interpreter() {
    use incept_compiler::Cpu;
    use incept_compiler::codegen::int8::Int8Isa;
    let mut ran = 0;
    for (isa, cpu) in
        [(Int8Isa::Avx512Vnni, Cpu::Avx512Vnni), (Int8Isa::AvxVnni, Cpu::AvxVnni), (Int8Isa::Avx2, Cpu::Avx2)]
    {
        if !isa.on_host() {
            println!("skipped the {} tile: not on this CPU", isa.name());
            continue;
        }
        int8_tile_convs(isa, cpu);
        ran += 1;
    }
    assert!(ran > 0 || !std::arch::is_x86_feature_detected!("avx2"), "no int8 tile ran");
}

/// The convs of `vnni_convs_match_the_interpreter` on one tile.
fn int8_tile_convs(isa: incept_compiler::codegen::int8::Int8Isa, cpu: incept_compiler::Cpu) {
    use incept_compiler::CompileOptions;
    use incept_compiler::codegen::int8::Int8Isa;
    let (mut cases, mut by_rows) = (0, 0);
    for (x_type, c, hw, m, k, stride) in [
        (DType::U8, 8, 8, 16, 1, 1),
        (DType::I8, 8, 8, 13, 1, 1),
        (DType::U8, 7, 9, 12, 1, 1),
        (DType::I8, 12, 11, 24, 1, 1),
        (DType::U8, 5, 7, 16, 3, 1),
        (DType::I8, 6, 10, 14, 3, 1),
        // Strided: a 1x1 projection, a 3x3, and a stem-like 7x7 on three channels, through the
        // strided byte gather (odd sizes leave partial vectors and border columns).
        (DType::U8, 9, 15, 16, 1, 2),
        (DType::I8, 6, 21, 13, 3, 2),
        (DType::U8, 3, 45, 12, 7, 2),
        (DType::I8, 3, 23, 8, 5, 3),
        // Weights outweighing the positions: the GEMM runs by row panels (a short last one,
        // a narrow last column panel).
        (DType::I8, 16, 7, 64, 1, 1),
        (DType::U8, 10, 5, 50, 3, 1),
    ] {
        let mut s = SplitMix(c as u64 * 131 + hw as u64);
        let mut graph = Gen::new(c as u64 + 7);
        let g = &mut graph;
        let x = g.input_of(x_type, &[1, c, hw, hw]);
        let weights: Vec<i8> = (0..m * c * k * k).map(|_| (s.next_u64() % 256) as u8 as i8).collect();
        let w = g.konst(Tensor::from_vec(vec![m, c, k, k], weights));
        let xz = if x_type == DType::U8 { typed(x_type, vec![], &[3]) } else { typed(x_type, vec![], &[-5]) };
        let bias: Vec<i32> = (0..m).map(|i| i as i32 * 977 - 4000).collect();
        let ins = vec![
            Some(x),
            Some(g.konst(Tensor::scalar(0.0625f32))),
            Some(g.konst(xz)),
            Some(w),
            Some(g.konst(Tensor::from_vec(vec![m], (0..m).map(|i| 0.001 * (1 + i % 5) as f32).collect::<Vec<_>>()))),
            Some(g.konst(Tensor::from_vec(vec![m], vec![0i8; m]))),
            Some(g.konst(Tensor::scalar(0.25f32))),
            Some(g.konst(typed(DType::U8, vec![], &[128]))),
            Some(g.konst(Tensor::from_vec(vec![m], bias))),
        ];
        let pads = vec![(k / 2) as i64; 4];
        let attrs = vec![("pads", AttrValue::Ints(pads)), ("strides", AttrValue::Ints(vec![stride as i64; 2]))];
        let out = g.op("QLinearConv", attrs, ins).expect("a valid conv");
        g.g.set_outputs(vec![out]);
        let input = {
            let v: Vec<i64> = (0..c * hw * hw)
                .map(|_| (s.next_u64() % 256) as i64 + if x_type == DType::I8 { -128 } else { 0 })
                .collect();
            typed(x_type, vec![1, c, hw, hw], &v)
        };
        let want = interp::run(&g.g, std::slice::from_ref(&input)).expect("interpreter");
        // Whole, and (windowed or strided ones) in bands of output rows: a limit of 64 bytes
        // leaves two or more bands.
        for (threads, band) in [(1, None), (2, None), (1, Some(64)), (2, Some(64))] {
            let opts = CompileOptions { cpu, threads, im2col_band_bytes: band, ..Default::default() };
            let (model, _) = incept_compiler::compile_graph(g.g.clone(), &opts).expect("compile");
            let plan = model.plan();
            let gemms = plan.steps.iter().filter(|st| st.op == "QLinearConv").count();
            // Stride-1 windowed convs on the 512-bit tile run over quad planes where their
            // dropped columns cost less than the byte matrix: no byte matrix, no bands
            // (`jit_quant_planes.rs` tests them at length).
            let planes = plan.steps.iter().any(|st| st.op == "QuadPlanes");
            assert!(!planes || (isa == Int8Isa::Avx512Vnni && k > 1 && stride == 1), "{c}x{hw} k {k}: planes");
            let banded = band.is_some() && (k > 1 || stride > 1) && !planes;
            assert_eq!(gemms > 1, banded, "{c}x{hw} k {k} s {stride} band {band:?}: {gemms} GEMM steps");
            let tile = format!("{} int8 microkernel", isa.name());
            assert!(plan.kernels.iter().any(|k| k.name.contains(&tile)), "{c}x{hw} {x_type}: not on the {tile}");
            by_rows += plan.kernels.iter().filter(|k| k.name.contains("by rows")).count();
            let gathered = plan.steps.iter().any(|st| st.op == "Im2colBytes");
            assert_eq!(
                gathered,
                (k > 1 || stride > 1) && !planes,
                "{c}x{hw} {x_type} k {k} s {stride}: the byte matrix"
            );
            let got = model.run(&[incept_compiler::to_runtime(&input).expect("input")]).expect("run");
            let got = incept_compiler::from_runtime(&got[0]).expect("output");
            assert_eq!(
                got.bytes(),
                want[0].bytes(),
                "{} {x_type} c {c} {hw}x{hw} m {m} k {k} s {stride} at {threads} threads, band {band:?}",
                isa.name()
            );
        }
        cases += 1;
    }
    assert!(by_rows > 0, "no conv ran its GEMM by row panels");
    println!("{cases} convs checked on the {} tile ({by_rows} plans by row panels)", isa.name());
}

/// Pointwise QLinearConvs whose last column panel goes to the column kernel
/// (`codegen/int8_columns.rs`): 1 to 4 columns alone (1, 4, 33 and 196 positions) or after the
/// 16-column tile (49, 50, 51 and 52), by column and by row panels, with a short last row panel,
/// both signs: the interpreter's bytes.
#[test]
fn vnni_column_splits_match_the_interpreter() {
    use incept_compiler::codegen::int8::Int8Isa;
    use incept_compiler::{CompileOptions, Cpu};
    if !Int8Isa::Avx512Vnni.on_host() {
        println!("skipped: this CPU has no AVX512-VNNI");
        return;
    }
    let mut cases = 0;
    for (x_type, y_type, c, (h, w), m) in [
        (DType::U8, DType::U8, 8, (7, 7), 16),
        (DType::I8, DType::I8, 12, (5, 10), 13),
        (DType::U8, DType::I8, 5, (3, 17), 30),
        (DType::I8, DType::U8, 40, (7, 7), 100),
        (DType::U8, DType::U8, 64, (3, 17), 12),
        (DType::I8, DType::U8, 24, (4, 13), 25),
        (DType::U8, DType::U8, 16, (1, 1), 40),
        (DType::I8, DType::I8, 9, (2, 2), 14),
        (DType::U8, DType::I8, 20, (3, 11), 12),
        (DType::U8, DType::U8, 32, (14, 14), 50),
    ] {
        let mut s = SplitMix(c as u64 * 17 + m as u64);
        let mut graph = Gen::new(c as u64 + 11);
        let g = &mut graph;
        let x = g.input_of(x_type, &[1, c, h, w]);
        let weights: Vec<i8> = (0..m * c).map(|_| (s.next_u64() % 256) as u8 as i8).collect();
        let wv = g.konst(Tensor::from_vec(vec![m, c, 1, 1], weights));
        let xz = typed(x_type, vec![], &[if x_type == DType::U8 { 3 } else { -5 }]);
        let yz = typed(y_type, vec![], &[if y_type == DType::U8 { 128 } else { -3 }]);
        let w_scales: Vec<f32> = (0..m).map(|i| 0.002 * (1 + i % 5) as f32).collect();
        let bias: Vec<i32> = (0..m).map(|i| i as i32 * 577 - 3000).collect();
        let ins = vec![
            Some(x),
            Some(g.konst(Tensor::scalar(0.0625f32))),
            Some(g.konst(xz)),
            Some(wv),
            Some(g.konst(Tensor::from_vec(vec![m], w_scales))),
            Some(g.konst(Tensor::from_vec(vec![m], vec![0i8; m]))),
            Some(g.konst(Tensor::scalar(0.25f32))),
            Some(g.konst(yz)),
            Some(g.konst(Tensor::from_vec(vec![m], bias))),
        ];
        let out = g.op("QLinearConv", vec![], ins).expect("a valid conv");
        g.g.set_outputs(vec![out]);
        let input = {
            let v: Vec<i64> = (0..c * h * w)
                .map(|_| (s.next_u64() % 256) as i64 + if x_type == DType::I8 { -128 } else { 0 })
                .collect();
            typed(x_type, vec![1, c, h, w], &v)
        };
        let want = interp::run(&g.g, std::slice::from_ref(&input)).expect("interpreter");
        for threads in [1, 2] {
            let opts = CompileOptions { cpu: Cpu::Avx512Vnni, threads, ..Default::default() };
            let (model, _) = incept_compiler::compile_graph(g.g.clone(), &opts).expect("compile");
            let what = format!("{x_type}->{y_type} c {c} {h}x{w} m {m} at {threads} threads");
            let split = model.plan().kernels.iter().any(|k| k.name.contains("int8 columns"));
            assert!(split, "{what}: no column kernel");
            let got = model.run(&[incept_compiler::to_runtime(&input).expect("input")]).expect("run");
            let got = incept_compiler::from_runtime(&got[0]).expect("output");
            assert_eq!(got.bytes(), want[0].bytes(), "{what}");
        }
        cases += 1;
    }
    println!("{cases} split convs checked");
}

/// Depthwise QLinearConvs on the AVX-512 plane kernel: both input types and output types,
/// strides 1 and 2 (and 3), 3x3, 5x5 and 7x7 windows, dilation, asymmetric pads, channel
/// multiplier 2, weight zero points per tensor and per channel, u8 weights, maps from 1x1 to
/// 40x40 and rows of 500 and 1001 (flat vectors that cross output rows, partial last vectors,
/// rows of many 64-byte chunks), batch 2: the interpreter's
/// bytes, at 1 and 2 threads, and on the kernel (not the scalar fallback).
#[test]
fn int8_depthwise_convs_match_the_interpreter() {
    use incept_compiler::CompileOptions;
    let cpus = incept_tests::graphs::int8_vector_tiers();
    if cpus.is_empty() {
        println!("skipped: this CPU has no AVX2");
        return;
    }
    struct Case {
        x: DType,
        w: DType,
        y: DType,
        n: usize,
        c: usize,
        mult: usize,
        hw: (usize, usize),
        k: (usize, usize),
        s: usize,
        d: usize,
        pads: [i64; 4],
        per_channel: bool,
    }
    let (u8_, i8_) = (DType::U8, DType::I8);
    let base = Case {
        x: u8_,
        w: i8_,
        y: u8_,
        n: 1,
        c: 5,
        mult: 1,
        hw: (14, 14),
        k: (3, 3),
        s: 1,
        d: 1,
        pads: [1, 1, 1, 1],
        per_channel: true,
    };
    let cases = vec![
        Case { ..base },
        Case { x: i8_, y: i8_, hw: (7, 7), ..base },
        Case { s: 2, hw: (15, 16), pads: [0, 0, 1, 1], ..base },
        Case { x: i8_, s: 2, hw: (40, 40), ..base },
        Case { k: (5, 5), pads: [2, 2, 2, 2], hw: (7, 9), y: i8_, ..base },
        Case { k: (7, 7), pads: [3, 3, 3, 3], hw: (12, 12), per_channel: false, ..base },
        Case { k: (3, 3), d: 2, pads: [2, 1, 2, 3], hw: (10, 11), ..base },
        Case { w: u8_, mult: 2, hw: (6, 5), per_channel: false, ..base },
        Case { w: u8_, x: i8_, n: 2, c: 3, hw: (9, 9), s: 3, pads: [1, 0, 0, 1], ..base },
        Case { k: (1, 3), pads: [0, 1, 0, 1], hw: (1, 33), ..base },
        Case { hw: (1, 1), ..base },
        Case { s: 2, k: (5, 5), pads: [2, 2, 1, 1], hw: (28, 28), x: i8_, y: i8_, ..base },
        // Rows wider than seven 64-byte chunks (the row copies), at both strides.
        Case { hw: (3, 500), c: 2, ..base },
        Case { s: 2, hw: (4, 1001), c: 2, x: i8_, ..base },
    ];
    let mut checked = 0;
    for (ci, case) in cases.iter().enumerate() {
        let mut s = SplitMix(ci as u64 * 7919 + 3);
        let mut graph = Gen::new(ci as u64 + 11);
        let g = &mut graph;
        let (c, m) = (case.c, case.c * case.mult);
        let (kh, kw) = case.k;
        let x = g.input_of(case.x, &[case.n, c, case.hw.0, case.hw.1]);
        let w_vals: Vec<i64> =
            (0..m * kh * kw).map(|_| (s.next_u64() % 256) as i64 - (case.w == i8_) as i64 * 128).collect();
        let w = g.konst(typed(case.w, vec![m, 1, kh, kw], &w_vals));
        let zero_of = |d: DType, v: i64| if d == u8_ { v + 128 } else { v };
        let x_zero = g.konst(typed(case.x, vec![], &[zero_of(case.x, -7)]));
        let nz = if case.per_channel { m } else { 1 };
        let w_zero_vals: Vec<i64> = (0..nz).map(|i| zero_of(case.w, (i as i64 % 3) - 1)).collect();
        let w_zero = g.konst(typed(case.w, if case.per_channel { vec![m] } else { vec![] }, &w_zero_vals));
        let w_scale: Vec<f32> = (0..nz).map(|i| 0.002 * (1 + i % 4) as f32).collect();
        let w_scale = g.konst(Tensor::from_vec(if case.per_channel { vec![m] } else { vec![] }, w_scale));
        let bias: Vec<i32> = (0..m).map(|i| i as i32 * 1301 - 2500).collect();
        let ins = vec![
            Some(x),
            Some(g.konst(Tensor::scalar(0.05f32))),
            Some(x_zero),
            Some(w),
            Some(w_scale),
            Some(w_zero),
            Some(g.konst(Tensor::scalar(0.11f32))),
            Some(g.konst(typed(case.y, vec![], &[zero_of(case.y, 5)]))),
            Some(g.konst(Tensor::from_vec(vec![m], bias))),
        ];
        let ints = |v: Vec<i64>| AttrValue::Ints(v);
        let attrs = vec![
            ("group", AttrValue::Int(c as i64)),
            ("strides", ints(vec![case.s as i64; 2])),
            ("dilations", ints(vec![case.d as i64; 2])),
            ("pads", ints(case.pads.to_vec())),
            ("kernel_shape", ints(vec![kh as i64, kw as i64])),
        ];
        let out = g.op("QLinearConv", attrs, ins).expect("a valid conv");
        g.g.set_outputs(vec![out]);
        let input = {
            let n = case.n * c * case.hw.0 * case.hw.1;
            let v: Vec<i64> = (0..n).map(|_| (s.next_u64() % 256) as i64 - (case.x == i8_) as i64 * 128).collect();
            typed(case.x, vec![case.n, c, case.hw.0, case.hw.1], &v)
        };
        let want = interp::run(&g.g, std::slice::from_ref(&input)).expect("interpreter");
        for (threads, &(cpu, isa)) in [1, 2].into_iter().flat_map(|t| cpus.iter().map(move |c| (t, c))) {
            let opts = CompileOptions { cpu, threads, ..Default::default() };
            let (model, _) = incept_compiler::compile_graph(g.g.clone(), &opts).expect("compile");
            let plan = model.plan();
            assert!(
                plan.kernels.iter().any(|k| k.name.starts_with("int8 Conv plane") && k.name.ends_with(isa)),
                "case {ci}: not on the {isa} int8 depthwise kernel"
            );
            let got = model.run(&[incept_compiler::to_runtime(&input).expect("input")]).expect("run");
            let got = incept_compiler::from_runtime(&got[0]).expect("output");
            assert_eq!(got.shape(), want[0].shape(), "case {ci}");
            assert_eq!(got.bytes(), want[0].bytes(), "case {ci} at {threads} threads on {isa}");
        }
        checked += 1;
    }
    println!("{checked} int8 depthwise convs checked");
}

/// QuantizeLinear and DequantizeLinear of u8 and i8 on the AVX-512 kernel: per tensor and per
/// channel (rows of 35), with and without a zero point, over whole vectors and a partial one;
/// the quantized values at halves of the scale (ties), far out of range, NaN, infinities and
/// -0. The interpreter's bits, at 1 and 2 threads, on the kernel.
#[test]
fn int8_quantize_and_dequantize_on_the_vector_kernel() {
    use incept_compiler::{CompileOptions, Cpu};
    if !std::arch::is_x86_feature_detected!("avx512f") {
        println!("skipped: this CPU has no AVX-512");
        return;
    }
    let shape = vec![2, 3, 5, 7];
    let n: usize = shape.iter().product();
    let mut checked = 0;
    for quantize in [true, false] {
        for d in [DType::U8, DType::I8] {
            for per_channel in [false, true] {
                for with_zero in [true, false] {
                    let mut graph = Gen::new(checked as u64 + 90);
                    let g = &mut graph;
                    let x = g.input_of(if quantize { DType::F32 } else { d }, &shape);
                    let c = if per_channel { 3 } else { 1 };
                    let scales: Vec<f32> = (0..c).map(|i| 0.037 * (1 + i) as f32).collect();
                    let pshape = if per_channel { vec![3] } else { vec![] };
                    let s = g.konst(Tensor::from_vec(pshape.clone(), scales.clone()));
                    let zeros: Vec<i64> =
                        (0..c).map(|i| [3, 250, 128][i] - if d == DType::I8 { 128 } else { 0 }).collect();
                    let mut ins = vec![Some(x), Some(s)];
                    if with_zero {
                        ins.push(Some(g.konst(typed(d, pshape, &zeros))));
                    }
                    let mut attrs = vec![("axis", AttrValue::Int(1))];
                    if quantize && !with_zero {
                        attrs.push(("output_dtype", AttrValue::Int(d as i64)));
                    }
                    let op = if quantize { "QuantizeLinear" } else { "DequantizeLinear" };
                    let out = g.op(op, attrs, ins).expect("a valid node");
                    g.g.set_outputs(vec![out]);
                    let input = if quantize {
                        let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1e30, -1e30];
                        let v: Vec<f32> = (0..n)
                            .map(|i| {
                                let s = scales[if per_channel { (i / 35) % 3 } else { 0 }];
                                if i % 17 == 5 {
                                    special[(i / 17) % special.len()]
                                } else {
                                    (i as f32 - 300.0) * s / 2.0
                                }
                            })
                            .collect();
                        Tensor::from_vec(shape.clone(), v)
                    } else {
                        let v: Vec<i64> =
                            (0..n).map(|i| ((i * 7919) % 256) as i64 - if d == DType::I8 { 128 } else { 0 }).collect();
                        typed(d, shape.clone(), &v)
                    };
                    let what = format!("{op} {d} per channel {per_channel} zero {with_zero}");
                    let want =
                        interp::run(&g.g, std::slice::from_ref(&input)).unwrap_or_else(|e| panic!("{what}: {e}"));
                    for threads in [1, 2] {
                        let opts = CompileOptions { cpu: Cpu::Avx512, threads, ..Default::default() };
                        let (model, _) = incept_compiler::compile_graph(g.g.clone(), &opts).expect("compile");
                        assert!(
                            model.plan().kernels.iter().any(|k| k.name.contains("quantize rows")),
                            "{what}: not on the vector kernel"
                        );
                        let got = model.run(&[incept_compiler::to_runtime(&input).expect("input")]).expect("run");
                        let got = incept_compiler::from_runtime(&got[0]).expect("output");
                        let first = got.bytes().iter().zip(want[0].bytes()).position(|(a, b)| a != b);
                        assert!(first.is_none(), "{what} at {threads} threads: first difference at byte {first:?}");
                    }
                    checked += 1;
                }
            }
        }
    }
    println!("{checked} vector Q/DQ cases checked");
}

/// One-row QLinearMatMuls (classifier heads) on the VNNI tile as pointwise convs: u8 and i8 A
/// of shape [K] and [1, K], scales per tensor and per column, output widths around the 12-row
/// panels. The interpreter's bytes, at 1 and 2 threads, on the tile.
#[test]
fn vnni_row_matmuls_match_the_interpreter() {
    use incept_compiler::{CompileOptions, Cpu};
    if !incept_compiler::codegen::int8::host_has_vnni() {
        println!("skipped: this CPU has no AVX512-VNNI");
        return;
    }
    let mut checked = 0;
    for (i, (a_type, rank, k, n, per_column)) in [
        (DType::U8, 2, 64, 24, true),
        (DType::I8, 1, 37, 13, false),
        (DType::U8, 1, 130, 1000, false),
        (DType::I8, 2, 257, 25, true),
    ]
    .into_iter()
    .enumerate()
    {
        let mut s = SplitMix(i as u64 + 500);
        let mut graph = Gen::new(i as u64 + 501);
        let g = &mut graph;
        let a_shape = if rank == 1 { vec![k] } else { vec![1, k] };
        let a = g.input_of(a_type, &a_shape);
        let b: Vec<i8> = (0..k * n).map(|_| (s.next_u64() % 256) as u8 as i8).collect();
        let b = g.konst(Tensor::from_vec(vec![k, n], b));
        let a_zero = if a_type == DType::U8 { 131 } else { -9 };
        let b_scale = if per_column {
            Tensor::from_vec(vec![n], (0..n).map(|j| 0.0005 * (1 + j % 7) as f32).collect::<Vec<_>>())
        } else {
            Tensor::scalar(0.002f32)
        };
        let ins = vec![
            Some(a),
            Some(g.konst(Tensor::scalar(0.05f32))),
            Some(g.konst(typed(a_type, vec![], &[a_zero]))),
            Some(b),
            Some(g.konst(b_scale)),
            Some(g.konst(if per_column { Tensor::from_vec(vec![n], vec![0i8; n]) } else { Tensor::scalar(0i8) })),
            Some(g.konst(Tensor::scalar(0.3f32))),
            Some(g.konst(typed(DType::U8, vec![], &[100]))),
        ];
        let out = g.op("QLinearMatMul", vec![], ins).expect("a valid matmul");
        g.g.set_outputs(vec![out]);
        let vals: Vec<i64> =
            (0..k).map(|_| (s.next_u64() % 256) as i64 - if a_type == DType::I8 { 128 } else { 0 }).collect();
        let input = typed(a_type, a_shape.clone(), &vals);
        let want = interp::run(&g.g, std::slice::from_ref(&input)).expect("interpreter");
        for threads in [1, 2] {
            let opts = CompileOptions { cpu: Cpu::Avx512Vnni, threads, ..Default::default() };
            let (model, _) = incept_compiler::compile_graph(g.g.clone(), &opts).expect("compile");
            let on_tile = model.plan().steps.iter().any(|st| st.op == "QuadIm2col");
            assert!(on_tile, "case {i}: not on the VNNI tile");
            let got = model.run(&[incept_compiler::to_runtime(&input).expect("input")]).expect("run");
            let got = incept_compiler::from_runtime(&got[0]).expect("output");
            assert_eq!(got.shape(), want[0].shape(), "case {i}");
            assert_eq!(got.bytes(), want[0].bytes(), "case {i} ({a_type} [{k}] x [{k}, {n}]) at {threads} threads");
        }
        checked += 1;
    }
    println!("{checked} VNNI row matmuls checked");
}
