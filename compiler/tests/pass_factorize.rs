//! factorize and factorize-approx: convs whose weights are exact rank-R products of random
//! factors in each form are rewritten and still compute the same outputs (borders included);
//! random weights are left alone in exact mode.

mod common;
use common::*;

use incept_compiler::passes::{PassManager, PassOptions, Pipeline, RunReport};
use incept_ir::attrs::{AttrValue, Attrs};
use incept_ir::text::parse::SplitMix;
use incept_ir::{Graph, Op, Tensor, verify};

fn rand(rng: &mut SplitMix, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.uniform()).collect()
}

/// A graph `y = Conv(x, W, b)` with the given weights (cout, cin, k, k).
fn conv_graph(w: Vec<f64>, [cout, cin, k]: [usize; 3], hw: usize, pads: [i64; 4], stride: i64) -> Graph {
    let mut g = Graph::new("conv");
    let x = g.add_input("x", incept_ir::TensorType::known(incept_ir::DType::F32, &[1, cin, hw, hw])).expect("input");
    let wt = Tensor::from_vec(vec![cout, cin, k, k], w.into_iter().map(|v| v as f32).collect::<Vec<f32>>());
    let w = g.add_const("w", wt).expect("w");
    let b = g
        .add_const("b", Tensor::from_vec(vec![cout], (0..cout).map(|i| i as f32 * 0.1).collect::<Vec<f32>>()))
        .expect("b");
    let attrs = Attrs::new(vec![
        ("pads".into(), AttrValue::Ints(pads.to_vec())),
        ("strides".into(), AttrValue::Ints(vec![stride, stride])),
    ]);
    let op = Op::from_attrs("Conv", attrs).expect("conv");
    let y = g.add_node("conv", op, vec![Some(x), Some(w), Some(b)], vec!["y".into()]).expect("node");
    g.set_outputs(vec![incept_ir::ValueId::new(y, 0)]);
    verify::verify(&g).expect("verify");
    g
}

fn factorize(g: &Graph, tolerance: Option<f64>) -> (Graph, RunReport) {
    let mut after = g.clone();
    let mut passes = vec!["factorize".to_string()];
    if tolerance.is_some() {
        passes.push("factorize-approx".into());
    }
    let pm = PassManager::new(
        &Pipeline::Explicit(passes),
        &[],
        PassOptions { factorize_tolerance: tolerance, ..PassOptions::default() },
    )
    .expect("pipeline");
    let report = pm.run(&mut after).unwrap_or_else(|e| panic!("{e}"));
    verify::verify(&after).expect("verify");
    (after, report)
}

/// W[o, i, ky, kx] = sum_r V[r, i, ky] H[o, r, kx]
fn separable_weights(cout: usize, cin: usize, k: usize, r: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix(seed);
    let (v, h) = (rand(&mut rng, r * cin * k), rand(&mut rng, cout * r * k));
    let mut w = vec![0.0; cout * cin * k * k];
    for o in 0..cout {
        for i in 0..cin {
            for y in 0..k {
                for x in 0..k {
                    w[((o * cin + i) * k + y) * k + x] =
                        (0..r).map(|rr| v[(rr * cin + i) * k + y] * h[(o * r + rr) * k + x]).sum();
                }
            }
        }
    }
    w
}

/// W[o, i, :] = sum_d P[o, i, d] D[i, d, :]
fn depthwise_weights(cout: usize, cin: usize, k: usize, dm: usize, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix(seed);
    let (p, d) = (rand(&mut rng, cout * cin * dm), rand(&mut rng, cin * dm * k * k));
    let mut w = vec![0.0; cout * cin * k * k];
    for o in 0..cout {
        for i in 0..cin {
            for j in 0..k * k {
                w[(o * cin + i) * k * k + j] =
                    (0..dm).map(|dd| p[(o * cin + i) * dm + dd] * d[(i * dm + dd) * k * k + j]).sum();
            }
        }
    }
    w
}

/// A chain of 3x3 kernels with `mid` channels between, composed into one (cout, cin, k, k) kernel.
fn stacked_weights(cout: usize, cin: usize, k: usize, mid: usize, seed: u64) -> Vec<f64> {
    use incept_compiler::passes::factorize::stacked::{Kernels, compose};
    let mut rng = SplitMix(seed);
    let mut acc = Kernels { outs: mid, ins: cin, size: 3, data: rand(&mut rng, mid * cin * 9) };
    let layers = (k - 1) / 2;
    for l in 1..layers {
        let outs = if l + 1 == layers { cout } else { mid };
        let next = Kernels { outs, ins: mid, size: 3, data: rand(&mut rng, outs * mid * 9) };
        acc = compose(&next, &acc);
    }
    acc.data
}

/// (kernel, group) of every conv.
fn convs(g: &Graph) -> Vec<(Vec<usize>, usize)> {
    g.node_ids()
        .filter_map(|id| match &g.node(id).op {
            Op::Conv(c) => Some((c.window.kernel.clone(), c.group)),
            _ => None,
        })
        .collect()
}

#[test]
fn exact_forms_are_rewritten_and_match() {
    let cases: Vec<(&str, usize, Vec<f64>)> = vec![
        ("separable", 5, separable_weights(6, 4, 5, 2, 1)),
        ("separable", 7, separable_weights(6, 4, 7, 2, 2)),
        ("depthwise", 5, depthwise_weights(6, 4, 5, 1, 3)),
        ("depthwise", 7, depthwise_weights(6, 4, 7, 2, 4)),
        ("stacked", 5, stacked_weights(6, 4, 5, 2, 5)),
        ("stacked", 7, stacked_weights(6, 4, 7, 2, 6)),
    ];
    for (form, k, w) in cases {
        // Borders: symmetric, asymmetric and no padding; stride 1 and 2.
        for (pads, stride) in [([k as i64 / 2; 4], 1), ([1, 2, 3, 0], 2), ([0; 4], 1)] {
            let g = conv_graph(w.clone(), [6, 4, k], 11, pads, stride);
            let (after, report) = factorize(&g, None);
            let kinds = convs(&after);
            // No dense KxK conv is left (the depthwise form keeps a KxK depthwise one).
            assert!(
                kinds.iter().all(|(kk, group)| kk != &vec![k, k] || *group > 1),
                "{form} {k}x{k} {pads:?}: not rewritten: {kinds:?}"
            );
            assert!(
                report.factorizations.iter().any(|r| r.applied && r.form == form),
                "{form} {k}: {:?}",
                report.factorizations
            );
            assert!(report.factorizations.iter().all(|r| r.weight_error <= 1e-6 && r.macs_after < r.macs_before));
            assert_same(&g, &after, 1e-5);
        }
    }
}

#[test]
fn stacked_5x5_prints_as_two_3x3_convs() {
    let g = conv_graph(stacked_weights(6, 4, 5, 2, 5), [6, 4, 5], 9, [2; 4], 1);
    let (after, _) = factorize(&g, None);
    assert_eq!(convs(&after), vec![(vec![3, 3], 1), (vec![3, 3], 1)]);
    let text = print(&after);
    // The first 3x3 carries the 5x5's padding; the second has none.
    assert!(text.contains("kernel_shape=[3, 3], strides=[1, 1], pads=[2, 2, 2, 2]"), "{text}");
    assert!(text.contains("kernel_shape=[3, 3], strides=[1, 1], pads=[0, 0, 0, 0]"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn random_weights_are_not_rewritten_exactly() {
    let mut rng = SplitMix(11);
    let w = rand(&mut rng, 6 * 4 * 25);
    let g = conv_graph(w, [6, 4, 5], 9, [2; 4], 1);
    let (after, report) = factorize(&g, None);
    assert_eq!(print(&g), print(&after));
    assert!(report.factorizations.is_empty());
}

#[test]
fn approximate_mode_respects_its_tolerance_and_reports() {
    // A rank-2 separable kernel plus small noise: not exact, but within 5% of rank 2.
    let mut w = separable_weights(8, 8, 5, 2, 12);
    let mut rng = SplitMix(13);
    let norm = (w.iter().map(|v| v * v).sum::<f64>() / w.len() as f64).sqrt();
    for v in &mut w {
        *v += 0.01 * norm * rng.uniform();
    }
    let g = conv_graph(w, [8, 8, 5], 12, [2; 4], 1);
    let (exact, report) = factorize(&g, None);
    assert!(report.factorizations.is_empty(), "noise makes it inexact");
    assert_eq!(print(&exact), print(&g));
    let (approx, report) = factorize(&g, Some(0.05));
    let r = report.factorizations.iter().find(|r| r.applied).expect("applied within 5%");
    assert!(r.approximate && r.weight_error <= 0.05 && r.macs_after < r.macs_before, "{r:?}");
    insta::assert_snapshot!(print(&approx));
    let err = incept_compiler::passes::factorize::output_error(&g, &approx, 7).expect("measure");
    assert!(err > 1e-6 && err < 0.2, "output error {err}");
    // A tighter tolerance than the noise allows leaves the conv alone, and says why.
    let (_, report) = factorize(&g, Some(1e-4));
    assert!(report.factorizations.iter().all(|r| !r.applied || !r.approximate));
    assert!(report.factorizations.iter().any(|r| !r.applied && !r.note.is_empty()));
}
