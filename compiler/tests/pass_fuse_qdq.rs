//! fuse-qdq on small QDQ groups: Mul becomes QLinearMul (within a step of the literal f32
//! reading), Pad between equal parameters pads the integers (exactly), and nothing is fused
//! without `fuse_qdq`.

mod common;
use common::*;
use incept_compiler::passes::PassOptions;
use incept_ir::interp;

fn int8() -> PassOptions {
    PassOptions { fuse_qdq: true, ..PassOptions::default() }
}

/// x quantized to u8 (scale 0.02, zero point 9), through `body` (which reads %dq and writes
/// %f), quantized with `out_scale` and `out_zero`, dequantized as the graph output.
fn qdq(body: &str, shape_out: &str, out_scale: &str, out_zero: &str) -> String {
    format!(
        r#"graph g {{
  input %x : f32[1,3,4,5]
  %s = const f32[] 0.02
  %z = const u8[] 9
  %q = QuantizeLinear(%x, %s, %z) : u8[1,3,4,5]
  %dq = DequantizeLinear(%q, %s, %z) : f32[1,3,4,5]
{body}  %os = const f32[] {out_scale}
  %oz = const u8[] {out_zero}
  %q2 = QuantizeLinear(%f, %os, %oz) : u8[{shape_out}]
  %y = DequantizeLinear(%q2, %os, %oz) : f32[{shape_out}]
  output %y
}}
"#
    )
}

/// The largest distance between the two graphs' outputs in steps of `step`.
fn steps(before: &incept_ir::Graph, after: &incept_ir::Graph, step: f64) -> f64 {
    let mut worst = 0f64;
    for seed in [1, 2, 3] {
        let inputs = random_inputs(before, seed);
        let a = interp::run(before, &inputs).expect("run before");
        let b = interp::run(after, &inputs).expect("run after");
        let (a, b) = (a[0].to_f64s().expect("f32"), b[0].to_f64s().expect("f32"));
        worst = a.iter().zip(&b).fold(worst, |m, (p, q)| m.max((p - q).abs() / step));
    }
    worst
}

#[test]
fn mul_becomes_qlinear_mul() {
    let body = "  %cq = const u8[3,1,1] [200, 3, 77]\n  %cs = const f32[] 0.01\n  %cz = const u8[] 100\n  %c = DequantizeLinear(%cq, %cs, %cz) : f32[3,1,1]\n  %f = Mul(%dq, %c) : f32[1,3,4,5]\n";
    let src = qdq(body, "1,3,4,5", "0.004", "128");
    let (before, after, _) = run_with(&src, &["fuse-qdq", "dead-code"], int8());
    assert_eq!((count(&after, "QLinearMul"), count(&after, "Mul")), (1, 0), "{}", print(&after));
    let worst = steps(&before, &after, 0.004);
    assert!(worst <= 1.0 + 1e-4, "moved by {worst} steps");
    // Without --precision int8 the literal graph stays.
    let (_, after, stats) = run_passes(&src, &["fuse-qdq"]);
    assert_eq!((stats[0].applied, count(&after, "QLinearMul")), (0, 0));
}

#[test]
fn pad_between_equal_parameters_pads_the_integers() {
    // The padding value 0.1 is five steps of 0.02 above the zero point: 14.
    let body = "  %pads = const i64[8] [0, 0, 1, 2, 0, 0, 1, 0]\n  %v = const f32[] 0.1\n  %f = Pad(%dq, %pads, %v) {mode=\"constant\"} : f32[1,3,6,7]\n";
    let src = qdq(body, "1,3,6,7", "0.02", "9");
    let (before, after, _) = run_with(&src, &["fuse-qdq", "dead-code"], int8());
    assert_eq!(count(&after, "QuantizeLinear"), 1, "{}", print(&after));
    assert!(print(&after).contains("const u8[] 14"), "{}", print(&after));
    assert_same(&before, &after, 0.0);
    // Other parameters on the two sides: the Pad stays in f32.
    let src = qdq(body, "1,3,6,7", "0.03", "9");
    let (_, after, _) = run_with(&src, &["fuse-qdq", "dead-code"], int8());
    assert_eq!(count(&after, "QuantizeLinear"), 2, "{}", print(&after));
}

#[test]
fn max_pool_between_equal_parameters_pools_the_integers() {
    let body = "  %f = MaxPool(%dq) {kernel_shape=[3,3], strides=[1,2], pads=[1,1,1,1]} : f32[1,3,4,3]\n";
    let src = qdq(body, "1,3,4,3", "0.02", "9");
    let (before, after, _) = run_with(&src, &["fuse-qdq", "dead-code"], int8());
    assert_eq!(count(&after, "QuantizeLinear"), 1, "{}", print(&after));
    assert!(print(&after).contains("MaxPool(%q)"), "{}", print(&after));
    assert_same(&before, &after, 0.0);
    // Other parameters after the pool: it stays in f32.
    let src = qdq(body, "1,3,4,3", "0.02", "10");
    let (_, after, _) = run_with(&src, &["fuse-qdq", "dead-code"], int8());
    assert_eq!(count(&after, "QuantizeLinear"), 2, "{}", print(&after));
}

#[test]
fn matmul_becomes_qlinear_matmul() {
    let src = r#"graph g {
  input %x : f32[2,6]
  %s = const f32[] 0.02
  %z = const u8[] 9
  %q = QuantizeLinear(%x, %s, %z) : u8[2,6]
  %dq = DequantizeLinear(%q, %s, %z) : f32[2,6]
  %w = const i8[6,4] [3, -7, 100, 5, -128, 64, 9, 0, 1, 2, 3, 4, -5, -6, -7, -8, 77, 33, -90, 12, 8, 7, 6, 5]
  %ws = const f32[4] [0.01, 0.02, 0.005, 0.03]
  %wz = const i8[4] [0, 0, 0, 0]
  %wd = DequantizeLinear(%w, %ws, %wz) {axis=1} : f32[6,4]
  %f = MatMul(%dq, %wd) : f32[2,4]
  %os = const f32[] 0.05
  %oz = const u8[] 128
  %q2 = QuantizeLinear(%f, %os, %oz) : u8[2,4]
  %y = DequantizeLinear(%q2, %os, %oz) : f32[2,4]
  output %y
}
"#;
    let (before, after, _) = run_with(src, &["fuse-qdq", "dead-code"], int8());
    assert_eq!((count(&after, "QLinearMatMul"), count(&after, "MatMul")), (1, 0), "{}", print(&after));
    let worst = steps(&before, &after, 0.05);
    assert!(worst <= 1.0 + 1e-4, "moved by {worst} steps");
}

#[test]
fn concat_and_average_pool_become_qlinear_ops() {
    let body = "  %s2 = const f32[] 0.05\n  %z2 = const u8[] 100\n  %r = Relu(%x) : f32[1,3,4,5]\n  %q3 = QuantizeLinear(%r, %s2, %z2) : u8[1,3,4,5]\n  %d3 = DequantizeLinear(%q3, %s2, %z2) : f32[1,3,4,5]\n  %c = Concat(%dq, %d3) {axis=1} : f32[1,6,4,5]\n  %f = AveragePool(%c) {kernel_shape=[3,3], pads=[1,1,1,1]} : f32[1,6,4,5]\n";
    // The average pool's output parameters differ from the concat's: two groups.
    let src = qdq(body, "1,6,4,5", "0.01", "90").replace(
        "  %f = AveragePool(%c)",
        "  %cs = const f32[] 0.03\n  %cz = const u8[] 70\n  %cq = QuantizeLinear(%c, %cs, %cz) : u8[1,6,4,5]\n  %cd = DequantizeLinear(%cq, %cs, %cz) : f32[1,6,4,5]\n  %f = AveragePool(%cd)",
    );
    let (before, after, _) = run_with(&src, &["fuse-qdq", "dead-code"], int8());
    assert_eq!((count(&after, "QLinearConcat"), count(&after, "QLinearAveragePool")), (1, 1), "{}", print(&after));
    assert_eq!((count(&after, "Concat"), count(&after, "AveragePool")), (0, 0), "{}", print(&after));
    let worst = steps(&before, &after, 0.01);
    assert!(worst <= 1.0 + 1e-4, "moved by {worst} steps");
}

/// A conv group with `act` (reading %cv, writing %f) between the conv and its Q: u8 output of
/// zero point `out_zero` and scale 0.01.
fn conv_act(act: &str, out_zero: &str) -> String {
    let body = format!(
        "  %w = const i8[4,3,3,3] [{}]\n  %ws = const f32[4] [0.01, 0.02, 0.005, 0.03]\n  %wz = const i8[4] [0, 0, 0, 0]\n  %wd = DequantizeLinear(%w, %ws, %wz) {{axis=0}} : f32[4,3,3,3]\n  %cv = Conv(%dq, %wd) {{pads=[1,1,1,1]}} : f32[1,4,4,5]\n{act}",
        (0..108).map(|i| ((i * 37 % 255) as i64 - 127).to_string()).collect::<Vec<_>>().join(", ")
    );
    qdq(&body, "1,4,4,5", "0.01", out_zero)
}

#[test]
fn relu_and_clip_before_the_q_clamp_the_qlinear_conv() {
    // (activation, output zero point, the clamp fused, or None where it is the whole range)
    let cases = [
        ("  %f = Relu(%cv) : f32[1,4,4,5]\n", "30", Some("[30, 255]")),
        // Zero point 0: Relu is what saturating to u8 does anyway.
        ("  %f = Relu(%cv) : f32[1,4,4,5]\n", "0", None),
        // Clip(-0.2, 0.3) at scale 0.01 around 100: [80, 130].
        (
            "  %lo = const f32[] -0.2\n  %hi = const f32[] 0.3\n  %f = Clip(%cv, %lo, %hi) : f32[1,4,4,5]\n",
            "100",
            Some("[80, 130]"),
        ),
        // Only a lower bound.
        ("  %lo = const f32[] -0.5\n  %f = Clip(%cv, %lo) : f32[1,4,4,5]\n", "100", Some("[50, 255]")),
    ];
    for (act, zero, clamp) in cases {
        let src = conv_act(act, zero);
        let (before, after, _) = run_with(&src, &["fuse-qdq", "dead-code"], int8());
        let text = print(&after);
        assert_eq!(count(&after, "QLinearConv"), 1, "{text}");
        assert_eq!(count(&after, "Relu") + count(&after, "Clip") + count(&after, "Conv"), 0, "{text}");
        match clamp {
            Some(c) => assert!(text.contains(&format!("incept_clamp={c}")), "{text}"),
            None => assert!(!text.contains("incept_clamp"), "{text}"),
        }
        // The clamp prints and parses back (the weights are elided in the text: drop them).
        let line = text.lines().find(|l| l.contains("QLinearConv")).expect("the conv").trim().to_string();
        let one = format!(
            "graph g {{\n  input %q : u8[1,3,4,5]\n  input %w : i8[4,3,3,3]\n  %s = const f32[] 0.02\n  %z = const u8[] 9\n  %ws = const f32[4] [0.01, 0.02, 0.005, 0.03]\n  %wz = const i8[4] [0, 0, 0, 0]\n  %os = const f32[] 0.01\n  %oz = const u8[] {zero}\n  {line}\n  output %q2\n}}\n"
        );
        let reparsed = incept_ir::text::parse(&one).unwrap_or_else(|e| panic!("{e}\n{one}"));
        assert!(print(&reparsed).contains(&line), "{}", print(&reparsed));
        let worst = steps(&before, &after, 0.01);
        assert!(worst <= 1.0 + 1e-4, "{act}: moved by {worst} steps");
    }
    // A bound computed at run time: the Clip stays in f32 and the conv group does not fuse
    // through it.
    let src = conv_act("  %mn = ReduceMin(%x) {keepdims=0} : f32[]\n  %f = Clip(%cv, %mn) : f32[1,4,4,5]\n", "100");
    let (_, after, _) = run_with(&src, &["fuse-qdq", "dead-code"], int8());
    assert_eq!((count(&after, "Clip"), count(&after, "QLinearConv")), (1, 0), "{}", print(&after));
}
