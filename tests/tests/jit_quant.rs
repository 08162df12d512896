//! QuantizeLinear and DequantizeLinear through the JIT, as an all-pairs table against the
//! interpreter (integer outputs compared exactly, f32 ones bit for bit within the checker's
//! bound): every integer type, per-tensor scales given as scalars and as one-element vectors,
//! per-axis scales on each axis (negative axes too), the zero point omitted, empty, constant or
//! computed at run time, and inputs that land exactly halfway between two integers (round half
//! to even) or far outside the type's range (saturation).

use incept_ir::attrs::AttrValue;
use incept_ir::graph::ValueId;
use incept_ir::{DType, Tensor};
use incept_tests::graphs::Gen;
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
    let shape: Vec<usize> = (0..rank).map(|_| g.int(2, 5)).collect();
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

/// A check of the checks: with the output's producer corrupted, every row must fail.
#[test]
fn every_row_catches_a_corrupted_output() {
    let table = quant_table();
    let (n, _, passed) = table.run(true);
    assert!(passed.is_empty(), "{} of {n} rows pass with a corrupted output: {passed:?}", passed.len());
}
