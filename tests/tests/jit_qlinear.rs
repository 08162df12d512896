//! ONNX Runtime's QOperator ops (com.microsoft) and the other 8-bit ops through the JIT, as
//! all-pairs tables against the interpreter, every output compared bit for bit:
//! - QLinearAdd and QLinearMul: u8 and i8, every broadcast form (the same shape, B one value,
//!   B per channel, A constant along the innermost dim, which swaps QLinearAdd's fused operands,
//!   and both operands broadcast), zero points omitted, zero or not, output scales that saturate
//!   some rows;
//! - QLinearSigmoid and QLinearLeakyRelu on inputs that hold every one of the 256 byte values;
//! - QLinearConcat of two or three inputs, on each axis, requantised or copied;
//! - QLinearGlobalAveragePool (channels first or last), QLinearAveragePool (windows, strides,
//!   pads, ceil mode, count_include_pad, the whole-input window) and MaxPool of u8/i8;
//! - QLinearSoftmax (opset 12 and 13 forms, each axis);
//! - DynamicQuantizeLinear, its three outputs, on zeros, NaNs and infinities;
//! - Pad of u8/i8 (constant mode), with pads that grow and crop.
//!
//! The JIT needs these ops' scales and zero points constant; one test checks that it refuses
//! each op family whose scale (or zero point) is computed at run time, rather than compiling it
//! wrongly.
use incept_compiler::passes::Pipeline;
use incept_compiler::{CompileOptions, compile_graph};
use incept_ir::attrs::AttrValue;
use incept_ir::graph::ValueId;
use incept_ir::ops::quant::qrange;
use incept_ir::{DType, Tensor, interp};
use incept_tests::graphs::{Gen, extent, ints, random_of};
use incept_tests::pairwise::{Dim, Row};
use incept_tests::tables::Table;

fn dtype(name: &str) -> DType {
    DType::from_name(name).expect("a dtype name")
}

/// Integers as a tensor of `d` (u8 or i8), which holds them.
fn typed(d: DType, shape: Vec<usize>, v: &[i64]) -> Tensor {
    match d {
        DType::U8 => Tensor::from_vec(shape, v.iter().map(|&x| x as u8).collect::<Vec<_>>()),
        _ => Tensor::from_vec(shape, v.iter().map(|&x| x as i8).collect::<Vec<_>>()),
    }
}

/// A constant of one value, as ONNX Runtime takes it: a scalar or a one-element vector.
fn one_value(g: &mut Gen, t: Tensor) -> ValueId {
    let shape = if g.coin() { vec![] } else { vec![1] };
    g.konst(t.reshaped(shape).expect("one value"))
}

fn scale_node(g: &mut Gen, s: f32) -> ValueId {
    one_value(g, Tensor::scalar(s))
}

fn zero_node(g: &mut Gen, d: DType, z: i64) -> ValueId {
    one_value(g, typed(d, vec![], &[z]))
}

/// A zero point away from 0: near either end of the range or in its middle.
fn some_zero(g: &mut Gen, d: DType) -> i64 {
    if d == DType::U8 { g.pick(&[3, 128, 250]) } else { g.pick(&[-120, -5, 60, 127]) }
}

/// Scale of the f32 inputs quantized to full-range operands: [-1, 1) spans about 292 steps, so
/// about one value in sixteen lands on each end of the range.
const FULL_SCALE: f32 = 0.0068359375;

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

/// An 8-bit operand: a graph input of small integers (`small`: -9..=9 or 0..=18), an f32 input
/// quantized over the whole range (`full`), or a constant over the whole range (`const`).
fn operand(g: &mut Gen, d: DType, shape: &[usize], values: &str) -> Option<ValueId> {
    match values {
        "small" => Some(g.input_of(d, shape)),
        "full" => {
            let f = g.input(shape);
            let s = g.konst(Tensor::scalar(FULL_SCALE));
            let z = g.konst(typed(d, vec![], &[if d == DType::U8 { 128 } else { 0 }]));
            g.op("QuantizeLinear", vec![], vec![Some(f), Some(s), Some(z)])
        }
        _ => {
            let v = full_values(g, d, shape.iter().product());
            Some(g.konst(typed(d, shape.to_vec(), &v)))
        }
    }
}

/// The largest |v - z| over the values an operand of `values` takes.
fn span(d: DType, values: &str, z: i64) -> f32 {
    let (lo, hi) = match (d, values) {
        (DType::U8, "small") => (0, 18),
        (_, "small") => (-9, 9),
        _ => {
            let (lo, hi) = qrange(d).expect("a quantized type");
            (lo as i64, hi as i64)
        }
    };
    (lo - z).abs().max((hi - z).abs()) as f32
}

/// The 256 byte values of `d`, shuffled, as a constant of `shape` (256 elements).
fn all_bytes(g: &mut Gen, d: DType, shape: Vec<usize>) -> ValueId {
    let mut v: Vec<i64> = (0..256).map(|b| if d == DType::U8 { b } else { b as u8 as i8 as i64 }).collect();
    for i in (1..v.len()).rev() {
        let j = g.int(0, i);
        v.swap(i, j);
    }
    g.konst(typed(d, shape, &v))
}

/// Rows that differ only in dimensions they do not use are one row: those stay at their first
/// level.
fn canonical(r: &Row, active: fn(&Row, &str) -> bool) -> bool {
    r.dims.iter().zip(&r.levels).all(|(d, &l)| l == 0 || active(r, d.name))
}

fn all_active(_: &Row, _: &str) -> bool {
    true
}

// ---------------------------------------------------------------------------------------------
// QLinearAdd and QLinearMul.

fn qbinary_table() -> Table {
    let dims = vec![
        Dim::new("op", &["add", "mul"]),
        Dim::new("type", &["u8", "i8"]),
        // B one value ([1]); B per channel ([C,1,1] against [N,C,H,W]); A constant along the
        // innermost dim (A [N,C,1,1] + B [N,C,H,W]: QLinearAdd's operands swap); both broadcast
        // (A [.., 1] against B [W]).
        Dim::new("bcast", &["same", "scalar", "channel", "a_bcast", "both"]),
        Dim::new("rank", &["1", "2", "4"]),
        // A short innermost dim, or one of 17 to 40 (rows of a vector and a partial one).
        Dim::new("size", &["short", "long"]),
        // Every zero point 0, or not; or A's and B's not 0 and C's omitted (the interpreter
        // requires A's and B's, which ONNX Runtime takes as optional).
        Dim::new("zero", &["zero", "nonzero", "c_omitted"]),
        Dim::new("scale", &["fit", "saturate"]),
        Dim::new("a_values", &["small", "full", "const"]),
        Dim::new("b_values", &["small", "full", "const"]),
    ];
    Table::new(
        "qbinary",
        dims,
        |r| {
            let bcast_ok = r.get("rank") != "1" || !matches!(r.get("bcast"), "channel" | "both");
            // At least one operand computed at run time, or the whole node folds away.
            bcast_ok && (r.get("a_values") != "const" || r.get("b_values") != "const")
        },
        all_active,
        build_qbinary,
    )
    .exact()
}

fn build_qbinary(g: &mut Gen, row: &Row) -> Option<ValueId> {
    let d = dtype(row.get("type"));
    let rank: usize = row.get("rank").parse().ok()?;
    // The innermost dim is at least 2, so that a broadcast along it is one.
    let mut s: Vec<usize> = (0..rank).map(|_| g.int(1, 4)).collect();
    s[rank - 1] = if row.get("size") == "long" { g.int(17, 40) } else { g.int(2, 6) };
    let inner_one = |s: &[usize]| {
        let mut t = s.to_vec();
        *t.last_mut().expect("rank >= 1") = 1;
        t
    };
    let (ash, bsh) = match (row.get("bcast"), rank) {
        ("same", _) => (s.clone(), s.clone()),
        ("scalar", _) => (s.clone(), vec![1]),
        ("channel", 4) => (s.clone(), vec![s[1], 1, 1]),
        ("channel", _) => (s.clone(), inner_one(&s)),
        ("a_bcast", 4) => (vec![s[0], s[1], 1, 1], s.clone()),
        ("a_bcast", _) => (inner_one(&s), s.clone()),
        _ => (inner_one(&s), vec![s[rank - 1]]),
    };
    let (av, bv) = (row.get("a_values"), row.get("b_values"));
    let a = operand(g, d, &ash, av)?;
    let b = operand(g, d, &bsh, bv)?;
    let zero = row.get("zero");
    let mut z = || match zero {
        "zero" => 0,
        _ => some_zero(g, d),
    };
    let (za, zb, zc) = (z(), z(), z());
    let (sa, sb) = (g.pick(&[0.0625f32, 0.1, 0.75, 3.0]), g.pick(&[0.046875f32, 0.2, 1.5]));
    // The output scale: about 100 steps for the largest result, or 20 times fewer (most
    // results saturate).
    let (ma, mb) = (span(d, av, za), span(d, bv, zb));
    let most = if row.get("op") == "add" { sa * ma + sb * mb } else { sa * sb * ma * mb };
    let sc = most / if row.get("scale") == "fit" { 100.0 } else { 2000.0 };
    let (sa, za) = (scale_node(g, sa), zero_node(g, d, za));
    let (sb, zb) = (scale_node(g, sb), zero_node(g, d, zb));
    let sc = scale_node(g, sc);
    let mut ins = vec![Some(a), Some(sa), Some(za), Some(b), Some(sb), Some(zb), Some(sc)];
    if zero != "c_omitted" {
        ins.push(Some(zero_node(g, d, zc)));
    }
    let op = if row.get("op") == "add" { "QLinearAdd" } else { "QLinearMul" };
    g.op(op, vec![], ins)
}

#[test]
fn qlinear_add_and_mul() {
    qbinary_table().passes();
}

/// QLinearAdd and QLinearMul on the AVX-512 kernel: rows longer than a tile's chunk (8192) with
/// same shapes and per-channel B; and every pair of byte values, A along rows against B along
/// columns and the other way round (QLinearAdd's two orders of its fused sums), with scales whose
/// ratios are inexact (ties to round depend on the order). The interpreter's bytes, at 1 and 2 threads, on the kernel.
#[test]
fn qlinear_add_and_mul_on_the_vector_kernel() {
    let cpus = incept_tests::graphs::int8_vector_tiers();
    if cpus.is_empty() {
        println!("skipped: this CPU has no AVX2");
        return;
    }
    let map = vec![1, 3, 97, 101];
    let (rows, cols) = (vec![256, 1], vec![256]);
    let cases = [
        ("QLinearAdd", DType::U8, map.clone(), map.clone(), [0.1f32, 0.2, 0.9]),
        ("QLinearMul", DType::I8, map.clone(), vec![3, 1, 1], [0.1, 0.2, 30.0]),
        ("QLinearAdd", DType::I8, map.clone(), vec![3, 1, 1], [0.1, 0.2, 0.9]),
        ("QLinearMul", DType::U8, map.clone(), map.clone(), [0.1, 0.2, 30.0]),
        // ra = 1/3 and rb = 1/6 rounded: (2x + y) / 6 falls on a half often, where the order of
        // the roundings decides.
        ("QLinearAdd", DType::U8, rows.clone(), cols.clone(), [1.0, 0.5, 3.0]),
        ("QLinearAdd", DType::U8, cols.clone(), rows.clone(), [1.0, 0.5, 3.0]),
        ("QLinearAdd", DType::I8, rows.clone(), cols.clone(), [0.37, 0.11, 0.013]),
        ("QLinearAdd", DType::I8, cols.clone(), rows.clone(), [0.37, 0.11, 0.013]),
        ("QLinearMul", DType::U8, rows.clone(), cols.clone(), [0.3, 0.7, 11.0]),
        ("QLinearMul", DType::I8, cols.clone(), rows.clone(), [0.3, 0.7, 11.0]),
    ];
    let mut checked = 0;
    for (i, (op, d, a_shape, b_shape, [sa, sb, sc])) in cases.into_iter().enumerate() {
        let mut graph = Gen::new(i as u64 + 40);
        let g = &mut graph;
        let a = g.input_of(d, &a_shape);
        let b = g.input_of(d, &b_shape);
        let (za, zb, zc) = (some_zero(g, d), some_zero(g, d), some_zero(g, d));
        let ins = vec![
            Some(a),
            Some(scale_node(g, sa)),
            Some(zero_node(g, d, za)),
            Some(b),
            Some(scale_node(g, sb)),
            Some(zero_node(g, d, zb)),
            Some(scale_node(g, sc)),
            Some(zero_node(g, d, zc)),
        ];
        let out = g.op(op, vec![], ins).expect("a valid op");
        g.g.set_outputs(vec![out]);
        // 7919 is prime to 256: any 256 consecutive elements hold every byte value.
        let inputs: Vec<Tensor> = g
            .g
            .input_values()
            .into_iter()
            .map(|v| {
                let shape = g.g.ty(v).shape.iter().map(|d| d.known().expect("static")).collect::<Vec<_>>();
                let n: usize = shape.iter().product();
                let vals: Vec<i64> =
                    (0..n).map(|k| ((k * 7919 + i * 31) % 256) as i64 - if d == DType::I8 { 128 } else { 0 }).collect();
                typed(d, shape, &vals)
            })
            .collect();
        let want = interp::run(&g.g, &inputs).expect("interpreter");
        for (threads, &(cpu, isa)) in [1, 2].into_iter().flat_map(|t| cpus.iter().map(move |c| (t, c))) {
            let opts = CompileOptions { cpu, threads, ..Default::default() };
            let (model, _) = incept_compiler::compile_graph(g.g.clone(), &opts).expect("compile");
            let on = |k: &str| (k.starts_with("int8 Add") || k.starts_with("int8 Mul")) && k.ends_with(isa);
            assert!(
                model.plan().kernels.iter().any(|k| on(&k.name)),
                "{op} {d} {a_shape:?} by {b_shape:?}: not on the {isa} vector kernel"
            );
            let rt: Vec<_> = inputs.iter().map(|t| incept_compiler::to_runtime(t).expect("input")).collect();
            let got = model.run(&rt).expect("run");
            let got = incept_compiler::from_runtime(&got[0]).expect("output");
            let (got, want) = (got.bytes(), want[0].bytes());
            let first = got.iter().zip(want).position(|(a, b)| a != b);
            assert!(
                got.len() == want.len() && first.is_none(),
                "{op} {d} {a_shape:?} by {b_shape:?} at {threads} threads on {isa}: first difference at byte {first:?}"
            );
        }
        checked += 1;
    }
    println!("{checked} vector QLinearAdd/Mul cases checked");
}

// ---------------------------------------------------------------------------------------------
// QLinearSigmoid and QLinearLeakyRelu.

fn qlookup_table() -> Table {
    let dims = vec![
        Dim::new("op", &["sigmoid", "leaky_0.01", "leaky_0.2"]),
        Dim::new("type", &["u8", "i8"]),
        // Both zero points given, or Y's omitted (the interpreter requires X's, which ONNX
        // Runtime takes as optional).
        Dim::new("zero", &["given", "y_omitted"]),
        Dim::new("x_scale", &["narrow", "wide"]),
        Dim::new("rank", &["1", "2", "3", "4"]),
        Dim::new("alpha", &["attr", "default"]),
    ];
    Table::new("qlookup", dims, |r| canonical(r, qlookup_active), qlookup_active, build_qlookup).exact()
}

/// LeakyRelu's alpha 0.01 may be left to the default.
fn qlookup_active(r: &Row, d: &str) -> bool {
    d != "alpha" || r.get("op") == "leaky_0.01"
}

fn build_qlookup(g: &mut Gen, row: &Row) -> Option<ValueId> {
    let d = dtype(row.get("type"));
    let rank: usize = row.get("rank").parse().ok()?;
    // Every byte value (a constant of 256 elements) followed or preceded on axis 0 by a graph
    // input of the same trailing dims.
    let tail: Vec<usize> = (1..rank).map(|_| g.pick(&[1, 2, 4])).collect();
    let p: usize = tail.iter().product();
    let mut cshape = vec![256 / p];
    cshape.extend(&tail);
    let mut ishape = vec![g.int(1, 3)];
    ishape.extend(&tail);
    let c = all_bytes(g, d, cshape);
    let i = g.input_of(d, &ishape);
    let ins = if g.coin() { vec![Some(c), Some(i)] } else { vec![Some(i), Some(c)] };
    let x = g.op("Concat", vec![("axis", AttrValue::Int(0))], ins)?;
    let op = row.get("op");
    let xs = if row.get("x_scale") == "narrow" { g.pick(&[0.03125f32, 0.05]) } else { g.pick(&[0.25f32, 0.6]) };
    let (xz, ys, yz) = match (op, d) {
        ("sigmoid", DType::U8) => (some_zero(g, d), 1.0f32 / 256.0, 0),
        ("sigmoid", _) => (some_zero(g, d), 1.0 / 256.0, -128),
        _ => (some_zero(g, d), xs * g.pick(&[1.0f32, 0.5, 0.3]), some_zero(g, d)),
    };
    // An omitted Y zero point is 0.
    let yz = if row.get("zero") == "given" { Some(yz) } else { None };
    let (xs, xz) = (scale_node(g, xs), zero_node(g, d, xz));
    let ys = scale_node(g, ys);
    let mut ins = vec![Some(x), Some(xs), Some(xz), Some(ys)];
    if let Some(yz) = yz {
        ins.push(Some(zero_node(g, d, yz)));
    }
    match op {
        "sigmoid" => g.op("QLinearSigmoid", vec![], ins),
        "leaky_0.01" if row.get("alpha") == "default" => g.op("QLinearLeakyRelu", vec![], ins),
        "leaky_0.01" => g.op("QLinearLeakyRelu", vec![("alpha", AttrValue::Float(0.01))], ins),
        _ => g.op("QLinearLeakyRelu", vec![("alpha", AttrValue::Float(0.2))], ins),
    }
}

#[test]
fn qlinear_sigmoid_and_leaky_relu() {
    qlookup_table().passes();
}

// ---------------------------------------------------------------------------------------------
// QLinearConcat.

fn qconcat_table() -> Table {
    let dims = vec![
        Dim::new("inputs", &["2", "3"]),
        Dim::new("axis", &["0", "1", "last", "negative"]),
        Dim::new("rank", &["2", "3", "4"]),
        // Every input with the output's scale and zero point (a copy), every one with its own,
        // or the first alike and the others not.
        Dim::new("params", &["same", "different", "mixed"]),
        Dim::new("type", &["u8", "i8"]),
        Dim::new("values", &["small", "full", "one_const"]),
    ];
    Table::new("qconcat", dims, |_| true, all_active, build_qconcat).exact()
}

fn build_qconcat(g: &mut Gen, row: &Row) -> Option<ValueId> {
    let d = dtype(row.get("type"));
    let rank: usize = row.get("rank").parse().ok()?;
    let n: usize = row.get("inputs").parse().ok()?;
    let (ax, axis) = match row.get("axis") {
        "0" => (0, 0),
        "1" => (1, 1),
        "last" => (rank - 1, rank as i64 - 1),
        _ => {
            let k = g.int(1, rank);
            (rank - k, -(k as i64))
        }
    };
    let base: Vec<usize> = (0..rank).map(|_| g.int(1, 3)).collect();
    let (ys, yz) = (g.pick(&[0.0625f32, 0.1, 0.75]), some_zero(g, d));
    let mut ins = vec![Some(scale_node(g, ys)), Some(zero_node(g, d, yz))];
    let values = row.get("values");
    let konst = if values == "one_const" { g.int(0, n - 1) } else { n };
    for k in 0..n {
        let mut shape = base.clone();
        shape[ax] = g.int(1, 3);
        let v = match (values, k == konst) {
            ("one_const", true) => "const",
            ("one_const", false) => "small",
            (v, _) => v,
        };
        let x = operand(g, d, &shape, v)?;
        let same = match row.get("params") {
            "same" => true,
            "mixed" => k == 0,
            _ => false,
        };
        let (xs, xz) = if same { (ys, yz) } else { (ys * g.pick(&[0.5f32, 3.0, 0.1, 1.3]), some_zero(g, d)) };
        ins.extend([Some(x), Some(scale_node(g, xs)), Some(zero_node(g, d, xz))]);
    }
    g.op("QLinearConcat", vec![("axis", AttrValue::Int(axis))], ins)
}

#[test]
fn qlinear_concat() {
    qconcat_table().passes();
}

// ---------------------------------------------------------------------------------------------
// QLinearGlobalAveragePool, QLinearAveragePool and MaxPool of u8/i8.

fn qpool_table() -> Table {
    let dims = vec![
        Dim::new("op", &["global", "avg", "max"]),
        Dim::new("type", &["u8", "i8"]),
        Dim::new("spatial", &["1d", "2d"]),
        Dim::new("layout", &["nchw", "nhwc"]),
        // A window of 2 or 3, or the whole input (no pads: QLinearAveragePool's global case).
        Dim::new("kernel", &["2", "3", "whole"]),
        Dim::new("stride", &["1", "2"]),
        Dim::new("pads", &["0", "1", "asym"]),
        Dim::new("ceil", &["0", "1"]),
        Dim::new("count_pad", &["0", "1"]),
        // Both zero points not 0, or 0, or (QLinearAveragePool) Y's omitted (the interpreter
        // requires X's, which ONNX Runtime takes as optional).
        Dim::new("zero", &["nonzero", "zero", "y_omitted"]),
        Dim::new("scale", &["fit", "saturate"]),
        Dim::new("values", &["small", "full"]),
    ];
    Table::new(
        "qpool",
        dims,
        |r| {
            canonical(r, qpool_active)
                && (r.get("kernel") != "whole" || r.get("pads") == "0")
                && (r.get("op") == "avg" || r.get("zero") != "y_omitted")
        },
        qpool_active,
        build_qpool,
    )
    .exact()
}

/// The global pool has no window; MaxPool has no scales; only the global pool is laid out
/// channels last here (the JIT refuses a channels-last QLinearAveragePool: see the refusals).
fn qpool_active(r: &Row, d: &str) -> bool {
    match (r.get("op"), d) {
        ("global", "kernel" | "stride" | "pads" | "ceil" | "count_pad") => false,
        ("global", _) => true,
        (_, "layout") => false,
        ("max", "count_pad" | "zero" | "scale") => false,
        _ => true,
    }
}

fn build_qpool(g: &mut Gen, row: &Row) -> Option<ValueId> {
    let d = dtype(row.get("type"));
    let op = row.get("op");
    let nsp = if row.get("spatial") == "1d" { 1 } else { 2 };
    let (n, c) = (g.int(1, 2), g.int(1, 3));
    let values = row.get("values");
    let zero = row.get("zero");
    // Scales: the output's equal to the input's, or 8 times finer (most averages saturate).
    let xs = g.pick(&[0.0625f32, 0.1, 0.75]);
    let ys = if row.get("scale") == "fit" { xs } else { xs / 8.0 };
    let (xz, yz) = match zero {
        "zero" => (0, 0),
        _ => (some_zero(g, d), some_zero(g, d)),
    };
    let params = |g: &mut Gen, ins: &mut Vec<Option<ValueId>>| {
        let (s, z) = (scale_node(g, xs), zero_node(g, d, xz));
        ins.extend([Some(s), Some(z)]);
        ins.push(Some(scale_node(g, ys)));
        if zero != "y_omitted" {
            ins.push(Some(zero_node(g, d, yz)));
        }
    };
    if op == "global" {
        // Planes past 16 and 32 elements too (the channel-first kernel sums sixteen at a time).
        let spatial: Vec<usize> = (0..nsp).map(|_| g.int(1, if nsp == 1 { 40 } else { 7 })).collect();
        let last = row.get("layout") == "nhwc";
        let shape = if last { [vec![n], spatial, vec![c]].concat() } else { [vec![n, c], spatial].concat() };
        let x = operand(g, d, &shape, values)?;
        let mut ins = vec![Some(x)];
        params(g, &mut ins);
        return g.op("QLinearGlobalAveragePool", vec![("channels_last", AttrValue::Int(last as i64))], ins);
    }
    let s: usize = row.get("stride").parse().ok()?;
    let (begin, end) = match (row.get("pads"), nsp) {
        ("1", _) => (vec![1; nsp], vec![1; nsp]),
        ("asym", 1) => (vec![0], vec![1]),
        ("asym", _) => (vec![1, 0], vec![0, 1]),
        _ => (vec![0; nsp], vec![0; nsp]),
    };
    let (kernel, spatial): (Vec<usize>, Vec<usize>) = match row.get("kernel") {
        "whole" => {
            let sp: Vec<usize> = (0..nsp).map(|_| g.int(1, 5)).collect();
            (sp.clone(), sp)
        }
        k => {
            let k: usize = k.parse().ok()?;
            (vec![k; nsp], (0..nsp).map(|i| extent(g, k, s, 1, begin[i], end[i])).collect())
        }
    };
    let x = operand(g, d, &[vec![n, c], spatial].concat(), values)?;
    let mut attrs = vec![("kernel_shape", ints(&kernel))];
    // Strides and pads of 1 and 0 may be left to the defaults.
    if s != 1 || g.coin() {
        attrs.push(("strides", ints(&vec![s; nsp])));
    }
    if begin.iter().chain(&end).any(|&p| p != 0) || g.coin() {
        attrs.push(("pads", ints(&[begin, end].concat())));
    }
    let ceil = row.get("ceil") == "1";
    if ceil || g.coin() {
        attrs.push(("ceil_mode", AttrValue::Int(ceil as i64)));
    }
    if op == "max" {
        return g.op("MaxPool", attrs, vec![Some(x)]);
    }
    attrs.push(("count_include_pad", AttrValue::Int((row.get("count_pad") == "1") as i64)));
    let mut ins = vec![Some(x)];
    params(g, &mut ins);
    g.op("QLinearAveragePool", attrs, ins)
}

#[test]
fn qlinear_pools() {
    qpool_table().passes();
}

/// MaxPool of u8/i8 and QLinearAveragePool on the AVX-512 plane kernel: both types over every
/// byte value, 2x2 and 3x3 windows, strides 1 and 2, symmetric and asymmetric pads, ceil mode,
/// the count with and without padding, maps of 9x11 to 35x35 (vectors across rows and partial
/// ones). The interpreter's bytes, at 1 and 2 threads, on the kernel.
#[test]
fn integer_pools_on_the_plane_kernel() {
    let cpus = incept_tests::graphs::int8_vector_tiers();
    if cpus.is_empty() {
        println!("skipped: this CPU has no AVX2");
        return;
    }
    let mut checked = 0;
    for (i, (max, d, k, s, pads, ceil, count_pad, hw)) in [
        (true, DType::U8, 3, 2, [1, 1, 1, 1], false, false, (35, 35)),
        (true, DType::I8, 3, 1, [1, 0, 0, 1], false, false, (9, 11)),
        (true, DType::I8, 2, 2, [0, 0, 0, 0], true, false, (17, 15)),
        (true, DType::U8, 3, 2, [0, 0, 0, 0], true, false, (16, 16)),
        (false, DType::U8, 3, 1, [1, 1, 1, 1], false, false, (17, 17)),
        (false, DType::I8, 3, 1, [1, 1, 1, 1], false, true, (12, 13)),
        (false, DType::U8, 3, 2, [1, 0, 1, 0], true, false, (35, 35)),
        (false, DType::I8, 2, 2, [0, 0, 1, 1], false, true, (9, 11)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut graph = Gen::new(i as u64 + 70);
        let g = &mut graph;
        let shape = vec![2, 3, hw.0, hw.1];
        let x = g.input_of(d, &shape);
        let mut attrs = vec![
            ("kernel_shape", ints(&[k, k])),
            ("strides", ints(&[s, s])),
            ("pads", ints(&pads)),
            ("ceil_mode", AttrValue::Int(ceil as i64)),
        ];
        let out = if max {
            g.op("MaxPool", attrs, vec![Some(x)])
        } else {
            attrs.push(("count_include_pad", AttrValue::Int(count_pad as i64)));
            let (xz, yz) = (some_zero(g, d), some_zero(g, d));
            let ins = vec![
                Some(x),
                Some(scale_node(g, 0.1)),
                Some(zero_node(g, d, xz)),
                Some(scale_node(g, 0.07)),
                Some(zero_node(g, d, yz)),
            ];
            g.op("QLinearAveragePool", attrs, ins)
        }
        .expect("a valid pool");
        g.g.set_outputs(vec![out]);
        let n: usize = shape.iter().product();
        // 7919 is prime to 256: every byte value in every run of 256 elements.
        let vals: Vec<i64> = (0..n).map(|k| ((k * 7919) % 256) as i64 - if d == DType::I8 { 128 } else { 0 }).collect();
        let input = typed(d, shape.clone(), &vals);
        let want = interp::run(&g.g, std::slice::from_ref(&input)).expect("interpreter");
        let what = format!(
            "case {i}: {} {d} {k}x{k} s{s} pads {pads:?} ceil {ceil} count_pad {count_pad} {hw:?}",
            if max { "max" } else { "average" }
        );
        for (threads, &(cpu, isa)) in [1, 2].into_iter().flat_map(|t| cpus.iter().map(move |c| (t, c))) {
            let opts = CompileOptions { cpu, threads, ..Default::default() };
            let (model, _) = incept_compiler::compile_graph(g.g.clone(), &opts).expect("compile");
            assert!(
                model.plan().kernels.iter().any(|k| k.name.contains(if max { "Max" } else { "Average" })
                    && k.name.contains("plane")
                    && k.name.ends_with(isa)),
                "{what}: not on the {isa} plane kernel"
            );
            let got = model.run(&[incept_compiler::to_runtime(&input).expect("input")]).expect("run");
            let got = incept_compiler::from_runtime(&got[0]).expect("output");
            assert_eq!(got.shape(), want[0].shape(), "{what}");
            let first = got.bytes().iter().zip(want[0].bytes()).position(|(a, b)| a != b);
            assert!(first.is_none(), "{what} at {threads} threads on {isa}: first difference at byte {first:?}");
        }
        checked += 1;
    }
    println!("{checked} integer pools checked");
}

// ---------------------------------------------------------------------------------------------
// QLinearSoftmax.

fn qsoftmax_table() -> Table {
    let dims = vec![
        Dim::new("opset", &["12", "13"]),
        Dim::new("axis", &["-1", "1", "0"]),
        Dim::new("rank", &["2", "3", "4"]),
        Dim::new("type", &["u8", "i8"]),
        Dim::new("y_scale", &["1/256", "1/255"]),
        Dim::new("x_scale", &["fine", "coarse"]),
        Dim::new("values", &["small", "full"]),
        Dim::new("axis_attr", &["given", "default"]),
    ];
    Table::new(
        "qsoftmax",
        dims,
        |r| canonical(r, qsoftmax_active) && (r.get("axis_attr") == "given" || r.get("axis") == "-1"),
        qsoftmax_active,
        build_qsoftmax,
    )
    .exact()
}

/// Axis -1 may be left to the default.
fn qsoftmax_active(r: &Row, d: &str) -> bool {
    d != "axis_attr" || r.get("axis") == "-1"
}

fn build_qsoftmax(g: &mut Gen, row: &Row) -> Option<ValueId> {
    let d = dtype(row.get("type"));
    let rank: usize = row.get("rank").parse().ok()?;
    let shape: Vec<usize> = (0..rank).map(|_| g.int(1, 5)).collect();
    let x = operand(g, d, &shape, row.get("values"))?;
    let xs = if row.get("x_scale") == "fine" { g.pick(&[0.02f32, 0.0625]) } else { g.pick(&[0.3f32, 1.0]) };
    let ys = if row.get("y_scale") == "1/256" { 1.0f32 / 256.0 } else { 1.0f32 / 255.0 };
    let yz = if d == DType::U8 { 0 } else { -128 };
    let xz = some_zero(g, d);
    let ins = vec![
        Some(x),
        Some(scale_node(g, xs)),
        Some(zero_node(g, d, xz)),
        Some(scale_node(g, ys)),
        Some(zero_node(g, d, yz)),
    ];
    let mut attrs = vec![("opset", AttrValue::Int(row.get("opset").parse().ok()?))];
    if row.get("axis_attr") == "given" {
        attrs.push(("axis", AttrValue::Int(row.get("axis").parse().ok()?)));
    }
    g.op("QLinearSoftmax", attrs, ins)
}

#[test]
fn qlinear_softmax() {
    qsoftmax_table().passes();
}

// ---------------------------------------------------------------------------------------------
// DynamicQuantizeLinear.

fn dynquant_table() -> Table {
    let dims = vec![
        Dim::new("rank", &["1", "2", "3", "4"]),
        // Uniform in [-1, 1), all zeros (of both signs), all >= 0, all <= 0, large, and NaN, +inf,
        // -inf or all three (with -0) along the last dim.
        Dim::new("values", &["random", "zero", "positive", "negative", "large", "nan", "inf", "neg_inf", "mixed"]),
        // The quantized values alone, or the scale and zero point too.
        Dim::new("outputs", &["y", "all"]),
    ];
    Table::new("dynquant", dims, |_| true, all_active, build_dynquant).exact()
}

fn build_dynquant(g: &mut Gen, row: &Row) -> Option<ValueId> {
    let rank: usize = row.get("rank").parse().ok()?;
    let shape: Vec<usize> = (0..rank).map(|_| g.int(1, 5)).collect();
    let last = shape[rank - 1];
    let x = g.input(&shape);
    let times = |g: &mut Gen, x: ValueId, k: f32| {
        let c = g.konst(Tensor::scalar(k));
        g.op("Mul", vec![], vec![Some(x), Some(c)])
    };
    let special = |g: &mut Gen, x: ValueId, of: &[f32]| {
        // The specials on every other element of the last dim (and on the first).
        let v: Vec<f32> = (0..last).map(|i| if i % 2 == 0 { of[(i / 2) % of.len()] } else { 0.0 }).collect();
        let c = g.konst(Tensor::from_vec(vec![last], v));
        g.op("Add", vec![], vec![Some(x), Some(c)])
    };
    let x = match row.get("values") {
        "random" => x,
        "zero" => times(g, x, 0.0)?,
        "positive" => g.op("Abs", vec![], vec![Some(x)])?,
        "negative" => {
            let a = g.op("Abs", vec![], vec![Some(x)])?;
            g.op("Neg", vec![], vec![Some(a)])?
        }
        "large" => times(g, x, 3.0e5)?,
        "nan" => special(g, x, &[f32::NAN])?,
        "inf" => special(g, x, &[f32::INFINITY])?,
        "neg_inf" => special(g, x, &[f32::NEG_INFINITY])?,
        _ => special(g, x, &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0])?,
    };
    let outs = g.op_n("DynamicQuantizeLinear", vec![], vec![Some(x)], 3)?;
    if row.get("outputs") == "all" {
        g.extra.extend([outs[1], outs[2]]);
    }
    Some(outs[0])
}

#[test]
fn dynamic_quantize_linear() {
    dynquant_table().passes();
}

// ---------------------------------------------------------------------------------------------
// Pad of u8/i8.

fn qpad_table() -> Table {
    let dims = vec![
        Dim::new("type", &["u8", "i8"]),
        // The constant value: absent (0), or given (a zero point near an end of the range).
        Dim::new("value", &["absent", "given"]),
        // Every pad >= 0, every pad <= 0 (a crop), or some of each.
        Dim::new("pads", &["positive", "negative", "mixed"]),
        Dim::new("rank", &["1", "2", "3", "4"]),
        // Pads for every axis, or for some axes named by the `axes` input (negative ones too).
        Dim::new("axes", &["all", "some"]),
        Dim::new("mode", &["default", "constant"]),
    ];
    Table::new("qpad", dims, |_| true, all_active, build_qpad).exact()
}

fn build_qpad(g: &mut Gen, row: &Row) -> Option<ValueId> {
    let d = dtype(row.get("type"));
    let rank: usize = row.get("rank").parse().ok()?;
    let shape: Vec<usize> = (0..rank).map(|_| g.int(3, 5)).collect();
    // The padded axes: all, or a nonempty subset (each named positively or negatively).
    let axes: Vec<usize> = match row.get("axes") {
        "all" => (0..rank).collect(),
        _ => {
            let mut a: Vec<usize> = (0..rank).filter(|_| g.coin()).collect();
            if a.is_empty() {
                a.push(g.int(0, rank - 1));
            }
            a
        }
    };
    let kind = row.get("pads");
    // One (begin, end) per padded axis; the first padded side is never 0.
    let mut pads: Vec<(i64, i64)> = axes
        .iter()
        .enumerate()
        .map(|(k, _)| {
            let grow = match kind {
                "positive" => true,
                "negative" => false,
                _ => k % 2 == 0,
            };
            let side = |g: &mut Gen| if grow { g.int(0, 2) as i64 } else { -(g.int(0, 1) as i64) };
            (side(g), side(g))
        })
        .collect();
    let first = if kind == "negative" { -1 } else { 1 };
    pads[0].0 = first;
    if kind == "mixed" {
        // Crop the end of the first padded axis (grown at its start), or of the second.
        match pads.get_mut(1) {
            Some(p) => p.1 = -1,
            None => pads[0].1 = -1,
        }
    }
    let x = g.input_of(d, &shape);
    let mut flat: Vec<i64> = pads.iter().map(|p| p.0).collect();
    flat.extend(pads.iter().map(|p| p.1));
    let p = g.ints(&flat);
    let mut ins = vec![Some(x), Some(p)];
    let value = row.get("value") == "given";
    if value {
        let v = some_zero(g, d);
        let t = typed(d, vec![], &[v]);
        let t = if g.coin() { t } else { t.reshaped(vec![1]).ok()? };
        ins.push(Some(g.konst(t)));
    }
    if row.get("axes") == "some" {
        if !value {
            ins.push(None);
        }
        let named: Vec<i64> = axes.iter().map(|&a| if g.coin() { a as i64 } else { a as i64 - rank as i64 }).collect();
        ins.push(Some(g.ints(&named)));
    }
    let attrs = match row.get("mode") {
        "constant" => vec![("mode", AttrValue::Str("constant".into()))],
        _ => vec![],
    };
    g.op("Pad", attrs, ins)
}

#[test]
fn integer_pad() {
    qpad_table().passes();
}

// ---------------------------------------------------------------------------------------------

/// A check of the checks: with the output's producer corrupted, every row of every table must
/// fail.
#[test]
fn every_row_catches_a_corrupted_output() {
    for table in [
        qbinary_table(),
        qlookup_table(),
        qconcat_table(),
        qpool_table(),
        qsoftmax_table(),
        dynquant_table(),
        qpad_table(),
    ] {
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
// What the JIT refuses.

/// A scale computed at run time: an input times zero plus the scale, which no pass can fold.
fn run_time_scale(g: &mut Gen, s: f32) -> Option<ValueId> {
    let one = g.input(&[]);
    let zero = g.konst(Tensor::scalar(0f32));
    let z = g.op("Mul", vec![], vec![Some(one), Some(zero)])?;
    let c = g.konst(Tensor::scalar(s));
    g.op("Add", vec![], vec![Some(z), Some(c)])
}

/// A zero point computed at run time: Max(z, Min(input, z)), always z.
fn run_time_zero(g: &mut Gen, d: DType, z: i64) -> Option<ValueId> {
    let low = g.konst(typed(d, vec![], &[z]));
    let other = g.input_of(d, &[]);
    let again = g.konst(typed(d, vec![], &[z]));
    let m = g.op("Min", vec![], vec![Some(other), Some(again)])?;
    g.op("Max", vec![], vec![Some(low), Some(m)])
}

/// A graph the JIT must refuse (one per op family, most with a scale or zero point computed at
/// run time), and what the refusal must say.
struct Refusal {
    name: &'static str,
    build: fn(&mut Gen) -> Option<ValueId>,
    says: &'static str,
}

/// Inputs of an op on `x`: (scale, zero point) pairs, the `run_time`-th scale (or, with
/// `zero_at_run_time`, zero point) computed at run time.
fn pairs(g: &mut Gen, d: DType, n: usize, run_time: usize, zero_at_run_time: bool) -> Option<Vec<Option<ValueId>>> {
    let mut ins = vec![];
    for k in 0..n {
        let s = if k == run_time && !zero_at_run_time { run_time_scale(g, 0.125)? } else { scale_node(g, 0.125) };
        let z = if k == run_time && zero_at_run_time { run_time_zero(g, d, 3)? } else { zero_node(g, d, 3) };
        ins.extend([Some(s), Some(z)]);
    }
    Some(ins)
}

fn refusals() -> Vec<Refusal> {
    const RUN_TIME: &str = "computed at run time";
    vec![
        Refusal {
            name: "QLinearAdd, C's scale",
            build: |g| {
                let (a, b) = (g.input_of(DType::U8, &[2, 3]), g.input_of(DType::U8, &[2, 3]));
                let p = pairs(g, DType::U8, 3, 2, false)?;
                g.op("QLinearAdd", vec![], vec![Some(a), p[0], p[1], Some(b), p[2], p[3], p[4], p[5]])
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearAdd, A's zero point",
            build: |g| {
                let (a, b) = (g.input_of(DType::I8, &[2, 3]), g.input_of(DType::I8, &[3]));
                let p = pairs(g, DType::I8, 3, 0, true)?;
                g.op("QLinearAdd", vec![], vec![Some(a), p[0], p[1], Some(b), p[2], p[3], p[4], p[5]])
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearMul, B's scale",
            build: |g| {
                let (a, b) = (g.input_of(DType::I8, &[2, 3]), g.input_of(DType::I8, &[2, 3]));
                let p = pairs(g, DType::I8, 3, 1, false)?;
                g.op("QLinearMul", vec![], vec![Some(a), p[0], p[1], Some(b), p[2], p[3], p[4], p[5]])
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearSigmoid, X's scale",
            build: |g| {
                let x = g.input_of(DType::U8, &[4]);
                let p = pairs(g, DType::U8, 2, 0, false)?;
                g.op("QLinearSigmoid", vec![], [vec![Some(x)], p].concat())
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearLeakyRelu, Y's scale",
            build: |g| {
                let x = g.input_of(DType::I8, &[2, 4]);
                let p = pairs(g, DType::I8, 2, 1, false)?;
                g.op("QLinearLeakyRelu", vec![("alpha", AttrValue::Float(0.2))], [vec![Some(x)], p].concat())
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearConcat, an input's scale",
            build: |g| {
                let (a, b) = (g.input_of(DType::U8, &[2, 3]), g.input_of(DType::U8, &[2, 1]));
                let p = pairs(g, DType::U8, 3, 2, false)?;
                let ins = vec![p[0], p[1], Some(a), p[2], p[3], Some(b), p[4], p[5]];
                g.op("QLinearConcat", vec![("axis", AttrValue::Int(1))], ins)
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearConcat, the output's zero point",
            build: |g| {
                let (a, b) = (g.input_of(DType::I8, &[2, 3]), g.input_of(DType::I8, &[1, 3]));
                let p = pairs(g, DType::I8, 3, 0, true)?;
                let ins = vec![p[0], p[1], Some(a), p[2], p[3], Some(b), p[4], p[5]];
                g.op("QLinearConcat", vec![("axis", AttrValue::Int(0))], ins)
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearGlobalAveragePool, Y's scale",
            build: |g| {
                let x = g.input_of(DType::U8, &[1, 2, 3, 3]);
                let p = pairs(g, DType::U8, 2, 1, false)?;
                g.op("QLinearGlobalAveragePool", vec![], [vec![Some(x)], p].concat())
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearAveragePool, X's scale",
            build: |g| {
                let x = g.input_of(DType::I8, &[1, 2, 5, 5]);
                let p = pairs(g, DType::I8, 2, 0, false)?;
                g.op("QLinearAveragePool", vec![("kernel_shape", ints(&[2, 2]))], [vec![Some(x)], p].concat())
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearAveragePool (whole-input window), Y's scale",
            build: |g| {
                let x = g.input_of(DType::U8, &[1, 2, 4]);
                let p = pairs(g, DType::U8, 2, 1, false)?;
                g.op("QLinearAveragePool", vec![("kernel_shape", ints(&[4]))], [vec![Some(x)], p].concat())
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearSoftmax, X's scale",
            build: |g| {
                let x = g.input_of(DType::U8, &[2, 5]);
                let p = pairs(g, DType::U8, 2, 0, false)?;
                g.op("QLinearSoftmax", vec![("opset", AttrValue::Int(13))], [vec![Some(x)], p].concat())
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearSoftmax, Y's scale",
            build: |g| {
                let x = g.input_of(DType::I8, &[2, 5]);
                let p = pairs(g, DType::I8, 2, 1, false)?;
                g.op("QLinearSoftmax", vec![("opset", AttrValue::Int(12))], [vec![Some(x)], p].concat())
            },
            says: RUN_TIME,
        },
        Refusal {
            name: "QLinearAveragePool, channels last",
            build: |g| {
                let x = g.input_of(DType::U8, &[1, 5, 5, 2]);
                let p = pairs(g, DType::U8, 2, 9, false)?;
                let attrs = vec![("kernel_shape", ints(&[2, 2])), ("channels_last", AttrValue::Int(1))];
                g.op("QLinearAveragePool", attrs, [vec![Some(x)], p].concat())
            },
            says: "channels-last",
        },
    ]
}

/// The graph is valid (the interpreter runs it) and the JIT refuses it with an error that says
/// why, with passes and without.
fn assert_refused(seed: u64, r: &Refusal) {
    let mut g = Gen::new(seed);
    let out = (r.build)(&mut g).unwrap_or_else(|| panic!("{}: not a valid graph: {:?}", r.name, g.desc));
    g.g.set_outputs(vec![out]);
    let inputs: Vec<Tensor> =
        g.g.input_values()
            .into_iter()
            .map(|v| random_of(&mut g.rng, g.g.ty(v).dtype, g.g.ty(v).static_dims().expect("static")))
            .collect();
    interp::run(&g.g, &inputs).unwrap_or_else(|e| panic!("{}: the interpreter fails: {e}", r.name));
    for pipeline in [Pipeline::Full, Pipeline::Explicit(vec![])] {
        let opts = CompileOptions { pipeline: pipeline.clone(), ..Default::default() };
        match compile_graph(g.g.clone(), &opts) {
            Ok(_) => panic!("{} ({pipeline:?}): compiled, but must be refused", r.name),
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(r.says), "{} ({pipeline:?}): refused, but not for '{}': {msg}", r.name, r.says);
            }
        }
    }
}

#[test]
fn run_time_scales_and_zero_points_are_refused() {
    for (i, r) in refusals().iter().enumerate() {
        assert_refused(0x5eed + i as u64, r);
    }
}

/// Pad of integers fills with its value from a constant: one computed at run time is refused.
#[test]
fn integer_pad_value_at_run_time_is_refused() {
    let r = Refusal {
        name: "Pad of u8, the value computed at run time",
        build: |g| {
            let x = g.input_of(DType::U8, &[3, 4]);
            let p = g.ints(&[1, 0, 0, 2]);
            let v = run_time_zero(g, DType::U8, 7)?;
            g.op("Pad", vec![], vec![Some(x), Some(p), Some(v)])
        },
        says: "computed at run time",
    };
    assert_refused(0x9ad, &r);
}
