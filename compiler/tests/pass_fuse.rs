//! fuse-epilogue and fuse-elementwise, and the text form of the fused ops.

mod common;
use common::*;

use incept_ir::text::{self, ConstPool};

const FUSE: [&str; 3] = ["fuse-epilogue", "fuse-elementwise", "dead-code"];

/// The printed graph parses back to the same text.
fn round_trips(g: &incept_ir::Graph) {
    let printed = print(g);
    let parsed = text::parse_with(&printed, &ConstPool::from_graph(g)).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(printed, print(&parsed));
}

#[test]
fn residual_block_fuses_into_conv_epilogues() {
    let src = r#"graph g {
  input %x : f32[1,4,6,6]
  %w1 = const f32[4,4,3,3] random(1)
  %b1 = const f32[4] [0.1, 0.2, 0.3, 0.4]
  %c1 = Conv(%x, %w1, %b1) {pads=[1,1,1,1]} : f32[1,4,6,6]
  %r1 = Relu(%c1) : f32[1,4,6,6]
  %w2 = const f32[4,4,3,3] random(2)
  %c2 = Conv(%r1, %w2) {pads=[1,1,1,1]} : f32[1,4,6,6]
  %s = Add(%c2, %x) : f32[1,4,6,6]
  %lo = const f32[] 0.0
  %hi = const f32[] 6.0
  %y = Clip(%s, %lo, %hi) : f32[1,4,6,6]
  output %y
}
"#;
    let (before, after, _) = run_passes(src, &FUSE);
    assert_same(&before, &after, 0.0);
    assert_eq!(
        (count(&after, "Conv"), count(&after, "Relu"), count(&after, "Add"), count(&after, "Clip")),
        (2, 0, 0, 0)
    );
    round_trips(&after);
    insta::assert_snapshot!(print(&after));
}

#[test]
fn gemm_bias_and_activation() {
    let src = r#"graph g {
  input %x : f32[2,5]
  %w = const f32[5,3] random(3)
  %m = MatMul(%x, %w) : f32[2,3]
  %b = const f32[3] [0.5, -0.5, 0.0]
  %a = Add(%b, %m) : f32[2,3]
  %y = HardSigmoid(%a) : f32[2,3]
  output %y
}
"#;
    let (before, after, _) = run_passes(src, &FUSE);
    assert_same(&before, &after, 0.0);
    assert_eq!(count(&after, "MatMul"), 1);
    assert_eq!(after.node_count(), 4, "{}", print(&after));
    round_trips(&after);
}

#[test]
fn shared_or_growing_results_do_not_fuse() {
    // The conv output has two users, and the add would broadcast the conv output up.
    let src = r#"graph g {
  input %x : f32[1,2,3,3]
  %w = const f32[2,2,3,3] random(4)
  %c = Conv(%x, %w) : f32[1,2,1,1]
  %r = Relu(%c) : f32[1,2,1,1]
  %t = Tanh(%c) : f32[1,2,1,1]
  %big = Add(%r, %x) : f32[1,2,3,3]
  output %t, %big
}
"#;
    let (before, after, stats) = run_passes(src, &["fuse-epilogue"]);
    assert_eq!(stats[0].applied, 0);
    assert_eq!(print(&before), print(&after));
}

#[test]
fn elementwise_chains_merge() {
    let src = r#"graph g {
  input %x : f32[1,3,4,4]
  input %z : f32[1,3,4,4]
  %s = const f32[1,3,1,1] [2.0, 0.5, 1.0]
  %t = const f32[1,3,1,1] [0.1, 0.2, 0.3]
  %a = Mul(%x, %s) : f32[1,3,4,4]
  %b = Add(%a, %t) : f32[1,3,4,4]
  %c = Relu(%b) : f32[1,3,4,4]
  %d = Mul(%c, %z) : f32[1,3,4,4]
  %lo = const f32[] -1.0
  %e = Clip(%d, %lo) : f32[1,3,4,4]
  %f = Sigmoid(%b) : f32[1,3,4,4]
  output %e, %f
}
"#;
    let (before, after, _) = run_passes(src, &FUSE);
    assert_same(&before, &after, 0.0);
    // %b has two users, so it stays the boundary: Mul+Add, and Relu+Mul+Clip, fuse; Sigmoid alone.
    assert_eq!((count(&after, "Elementwise"), count(&after, "Sigmoid")), (2, 1), "{}", print(&after));
    round_trips(&after);
    insta::assert_snapshot!(print(&after));
}

#[test]
fn fused_ops_parse_from_text() {
    let src = r#"graph g {
  input %x : f32[1,2,4,4]
  input %r : f32[1,2,4,4]
  %w = const f32[2,2,1,1] [1.0, 0.5, -0.5, 1.0]
  %y = Conv(%x, %w) {kernel_shape=[1,1]} epilogue(add %r, leaky_relu(0.1), clip(_, 6.0)) : f32[1,2,4,4]
  %s = const f32[1,2,1,1] [2.0, 3.0]
  %z = Elementwise(%y, %s) expr(hard_swish(prelu(mul(%y, %s), %s))) : f32[1,2,4,4]
  output %z
}
"#;
    let (g, _, _) = run_passes(src, &[]);
    round_trips(&g);
    let e = incept_ir::text::parse(&src.replace("add %r,", "add %nope,")).expect_err("undefined operand");
    assert!(e.to_string().contains("%nope"), "{e}");
    let e = incept_ir::text::parse(&src.replace("leaky_relu(0.1)", "frobnicate")).expect_err("unknown step");
    assert!(e.to_string().contains("frobnicate"), "{e}");
}
