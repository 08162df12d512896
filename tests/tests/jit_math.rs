//! The vector forms of exp, erf and tanh (and what is built on them: Sigmoid, Elu, Gelu, Softmax)
//! against the reference element by element, over a sweep that crosses every range boundary:
//! tiny and huge magnitudes, the clamps of exp, signed zeros, infinities and NaN; on every tier
//! this CPU runs (the CLIF kernel's four lanes, and AVX-512's sixteen in `codegen/wide_expr.rs`,
//! whose rows end under a mask). The all-pairs tables compare against the output's scale; here
//! each element must be close on its own.

use incept_compiler::{CompileOptions, compile_graph, from_runtime, to_runtime};
use incept_ir::attrs::Attrs;
use incept_ir::graph::{Graph, ValueId};
use incept_ir::shape::TensorType;
use incept_ir::{DType, Op, Tensor, interp};

fn sweep() -> Vec<f32> {
    let mut v: Vec<f32> =
        vec![0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-30, -1e-30, 88.72, 88.73, -86.0, -87.5, -104.0];
    // A dense grid over [-12, 12] and a logarithmic one out to 100 on both sides.
    v.extend((-2400..=2400).map(|i| i as f32 * 0.005));
    for e in -300..=20 {
        let m = 10f32.powf(e as f32 / 10.0);
        v.push(m);
        v.push(-m);
    }
    while !v.len().is_multiple_of(4) {
        v.push(0.5);
    }
    // Not a multiple of 16: AVX-512's last vector runs masked.
    if v.len().is_multiple_of(16) {
        v.extend([0.25, -0.25, 2.0, -2.0]);
    }
    v
}

fn graph(op: &str, attrs: Vec<(&str, incept_ir::attrs::AttrValue)>, n: usize) -> Graph {
    let mut g = Graph::new("math");
    let x = g.add_input("x", TensorType::known(DType::F32, &[n])).expect("input");
    let attrs = Attrs::new(attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
    let op = Op::from_attrs(op, attrs).expect("op");
    let id = g.add_node("y", op, vec![Some(x)], vec!["y".into()]).expect("node");
    g.set_outputs(vec![ValueId::new(id, 0)]);
    g
}

/// The largest error over the sweep on every tier, each element measured against
/// `max(1, |reference|)` for the bounded functions and relative for exp; and the largest relative
/// error where |x| < 0.25 (erf and tanh keep their relative precision there: `c * tanh(x / c)`
/// with a huge `c` needs it).
fn worst(op: &str, attrs: Vec<(&str, incept_ir::attrs::AttrValue)>, relative: bool) -> (f64, f32, f64) {
    let mut worst = (0f64, 0f32, 0f64);
    for cpu in incept_tests::graphs::tiers() {
        let w = worst_on(op, attrs.clone(), relative, cpu);
        if w.0 > worst.0 {
            worst = (w.0, w.1, worst.2);
        }
        worst.2 = worst.2.max(w.2);
    }
    worst
}

fn worst_on(
    op: &str,
    attrs: Vec<(&str, incept_ir::attrs::AttrValue)>,
    relative: bool,
    cpu: incept_compiler::Cpu,
) -> (f64, f32, f64) {
    let xs = sweep();
    let g = graph(op, attrs, xs.len());
    let input = Tensor::from_vec(vec![xs.len()], xs.clone());
    let want = interp::run(&g, std::slice::from_ref(&input)).expect("interpreter").remove(0);
    let (model, _) = compile_graph(g, &CompileOptions { threads: 1, cpu, ..Default::default() }).expect("compile");
    let wide = model.plan().kernels.iter().any(|k| k.name.starts_with("avx512 elementwise"));
    let avx512 = cpu.tier() == incept_compiler::codegen::Tier::Avx512;
    assert_eq!(wide, avx512, "{op} on {cpu:?}: the AVX-512 row kernel");
    let got = model.run(&[to_runtime(&input).expect("input")]).expect("run").into_vec().remove(0);
    let got = from_runtime(&got).expect("output").to_f64s().expect("f32");
    let want = want.to_f64s().expect("f32");
    let mut worst = (0f64, 0f32, 0f64);
    for ((g, w), x) in got.iter().zip(&want).zip(&xs) {
        if x.abs() < 0.25 && *w != 0.0 && g.is_finite() {
            worst.2 = worst.2.max((g - w).abs() / w.abs());
        }
        let err = if g.is_nan() || w.is_nan() {
            if g.is_nan() && w.is_nan() { 0.0 } else { f64::INFINITY }
        } else if g == w {
            0.0
        } else if w.is_infinite() || g.is_infinite() {
            f64::INFINITY
        } else if relative {
            // exp below e^-86 is flushed to e^-86's neighbourhood: absolute there.
            if w.abs() < 1e-37 { (g - w).abs() / 1e-37 * 1e-7 } else { (g - w).abs() / w.abs() }
        } else {
            (g - w).abs() / w.abs().max(1.0)
        };
        if err > worst.0 {
            worst = (err, *x, worst.2);
        }
    }
    worst
}

#[test]
fn exp_is_within_a_few_ulps() {
    let (err, at, _) = worst("Exp", vec![], true);
    println!("Exp: worst relative error {err:e} at x = {at}");
    assert!(err <= 5e-7, "Exp: relative error {err:e} at x = {at}");
}

#[test]
fn erf_tanh_sigmoid_gelu_elu_are_within_5e_7() {
    use incept_ir::attrs::AttrValue;
    let cases: Vec<(&str, Vec<(&str, AttrValue)>)> = vec![
        ("Erf", vec![]),
        ("Tanh", vec![]),
        ("Sigmoid", vec![]),
        ("Gelu", vec![]),
        ("Gelu", vec![("approximate", AttrValue::Str("tanh".into()))]),
        ("Elu", vec![]),
    ];
    for (op, attrs) in cases {
        let label = format!("{op} {attrs:?}");
        let (err, at, small) = worst(op, attrs, false);
        println!("{label}: worst error {err:e} at x = {at}; relative below |x| = 0.25: {small:e}");
        if matches!(op, "Erf" | "Tanh") {
            assert!(small <= 1e-6, "{label}: relative error {small:e} near 0");
        }
        // Abramowitz and Stegun's erf is within 1.5e-7; f32 arithmetic adds about as much.
        assert!(err <= 5e-7, "{label}: error {err:e} (of max(1, |y|)) at x = {at}");
    }
}
