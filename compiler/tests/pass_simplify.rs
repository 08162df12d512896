//! remove-identity, dead-code, cse and const-fold on small text graphs: snapshots of the result,
//! must-not-fire cases, and the interpreter before vs after.

mod common;
use common::*;

const CLEANUP: &str = r#"
graph g {
  input %x : f32[2,3]
  %a = Identity(%x) : f32[2,3]
  %b = Relu(%a) : f32[2,3]
  %c = Relu(%a) : f32[2,3]
  %d = Add(%b, %c) : f32[2,3]
  %e, %mask = Dropout(%d) : f32[2,3], bool[2,3]
  %unused = Sigmoid(%x) : f32[2,3]
  %k1 = const f32[3] [1.0, 2.0, 3.0]
  %k2 = const f32[3] [1.0, 2.0, 3.0]
  %f = Mul(%e, %k1) : f32[2,3]
  %h = Mul(%f, %k2) : f32[2,3]
  output %h
}
"#;

#[test]
fn identity_dead_code_and_cse() {
    let (before, after, stats) = run_passes(CLEANUP, &["remove-identity", "dead-code", "cse"]);
    assert_same(&before, &after, 0.0);
    assert_eq!(
        (count(&after, "Identity"), count(&after, "Dropout"), count(&after, "Sigmoid"), count(&after, "Relu")),
        (0, 0, 0, 1)
    );
    assert!(stats.iter().all(|s| s.applied > 0), "{stats:?}");
    insta::assert_snapshot!(print(&after));
}

#[test]
fn dropout_mask_becomes_a_constant() {
    let src = r#"
graph g {
  input %x : f32[2]
  %r = Relu(%x) : f32[2]
  %y, %m = Dropout(%r) : f32[2], bool[2]
  output %y, %m
}
"#;
    let (before, after, _) = run_passes(src, &["remove-identity"]);
    assert_eq!(count(&after, "Dropout"), 0);
    assert_eq!(after.input_names(), ["x"]);
    let names: Vec<&str> = after.outputs().iter().map(|&v| after.value(v).name.as_str()).collect();
    assert_eq!(names, ["y", "m"]);
    let out = incept_ir::interp::run(&after, &random_inputs(&before, 1)).expect("run");
    assert_eq!(out[1].view_bool().expect("bool"), &[1, 1]);
}

#[test]
fn identity_between_input_and_output_stays() {
    let src = "graph g {\n  input %x : f32[2]\n  %y = Identity(%x) : f32[2]\n  output %y\n}\n";
    let (before, after, stats) = run_passes(src, &["remove-identity"]);
    assert_eq!(stats[0].applied, 0);
    assert_eq!(print(&before), print(&after));
}

#[test]
fn cse_keeps_different_attributes_apart() {
    let src = r#"
graph g {
  input %x : f32[4]
  %a = LeakyRelu(%x) {alpha=0.1} : f32[4]
  %b = LeakyRelu(%x) {alpha=0.2} : f32[4]
  %c = Add(%a, %b) : f32[4]
  output %c
}
"#;
    let (_, after, stats) = run_passes(src, &["cse"]);
    assert_eq!(stats[0].applied, 0);
    assert_eq!(count(&after, "LeakyRelu"), 2);
}

const SHAPE_CHAIN: &str = r#"
graph g {
  input %x : f32[2,3,4]
  %s = Shape(%x) : i64[3]
  %i0 = const i64[] 0
  %d0 = Gather(%s, %i0) {axis=0} : i64[]
  %ax = const i64[1] [0]
  %u = Unsqueeze(%d0, %ax) : i64[1]
  %m1 = const i64[1] [-1]
  %shape = Concat(%u, %m1) {axis=0} : i64[2]
  %y = Reshape(%x, %shape) : f32[2,12]
  %n = const i64[1] [3]
  %z = ConstantOfShape(%n) {value=const f32[1] [0.5]} : f32[3]
  %st = const i64[] 0
  %lim = const i64[] 3
  %dl = const i64[] 1
  %r = Range(%st, %lim, %dl) : i64[3]
  %rf = Cast(%r) {to=1} : f32[3]
  %w = Add(%z, %rf) : f32[3]
  output %y, %w
}
"#;

#[test]
fn const_fold_evaluates_shape_subgraphs() {
    let (before, after, _) = run_passes(SHAPE_CHAIN, &["const-fold", "dead-code"]);
    assert_same(&before, &after, 0.0);
    for op in ["Shape", "Gather", "Unsqueeze", "Concat", "ConstantOfShape", "Range", "Cast", "Add"] {
        assert_eq!(count(&after, op), 0, "{op} left after folding");
    }
    insta::assert_snapshot!(print(&after));
}

#[test]
fn const_fold_does_not_bloat_the_model() {
    let src = r#"
graph g {
  input %x : f32[1]
  %n = const i64[2] [1000, 1000]
  %big = ConstantOfShape(%n) : f32[1000,1000]
  %axes = const i64[2] [0, 1]
  %s = ReduceSum(%big, %axes) {keepdims=0} : f32[]
  %y = Add(%x, %s) : f32[1]
  output %y
}
"#;
    let (before, after, _) = run_passes(src, &["const-fold", "dead-code"]);
    // The million-element tensor is not materialised as a constant.
    assert_eq!(count(&after, "ConstantOfShape"), 1);
    assert_same(&before, &after, 0.0);
}
