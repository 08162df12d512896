//! fold-transpose: consecutive Transposes compose, inverse pairs and identities vanish.

mod common;
use common::*;

#[test]
fn consecutive_transposes_compose() {
    let src = r#"graph g {
  input %x : f32[2,3,4]
  %a = Transpose(%x) {perm=[1,0,2]} : f32[3,2,4]
  %b = Transpose(%a) {perm=[0,2,1]} : f32[3,4,2]
  output %b
}
"#;
    let (before, after, _) = run_passes(src, &["fold-transpose", "dead-code"]);
    assert_same(&before, &after, 0.0);
    assert_eq!(count(&after, "Transpose"), 1);
    insta::assert_snapshot!(print(&after));
}

#[test]
fn inverse_pairs_cancel() {
    let src = r#"graph g {
  input %x : f32[2,3,4,5]
  %r = Relu(%x) : f32[2,3,4,5]
  %a = Transpose(%r) {perm=[0,2,3,1]} : f32[2,4,5,3]
  %b = Transpose(%a) {perm=[0,3,1,2]} : f32[2,3,4,5]
  output %b
}
"#;
    let (before, after, _) = run_passes(src, &["fold-transpose", "dead-code"]);
    assert_same(&before, &after, 0.0);
    assert_eq!(count(&after, "Transpose"), 0);
    assert_eq!(after.value(after.outputs()[0]).name, "b");
}

#[test]
fn identity_permutation_between_input_and_output_stays() {
    let src = "graph g {\n  input %x : f32[2,3]\n  %y = Transpose(%x) {perm=[0,1]} : f32[2,3]\n  output %y\n}\n";
    let (before, after, stats) = run_passes(src, &["fold-transpose"]);
    assert_eq!(stats[0].applied, 0);
    assert_eq!(print(&before), print(&after));
}

#[test]
fn transpose_of_a_constant_folds() {
    let src = r#"graph g {
  input %x : f32[3,2]
  %c = const f32[2,3] [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
  %t = Transpose(%c) : f32[3,2]
  %y = Add(%x, %t) : f32[3,2]
  output %y
}
"#;
    let (before, after, _) = run_passes(src, &["const-fold", "dead-code"]);
    assert_same(&before, &after, 0.0);
    assert_eq!(count(&after, "Transpose"), 0);
}
