//! fold-batchnorm, batchnorm-to-affine, fold-affine and fold-affine-before-conv.

mod common;
use common::*;

const FOLDS: [&str; 5] =
    ["fold-batchnorm", "batchnorm-to-affine", "fold-affine", "fold-affine-before-conv", "dead-code"];
const TOL: f64 = 1e-5;

/// BN parameters for 4 channels, and a BN of `%y` into `%z` with output type `ty`.
fn bn4(ty: &str) -> String {
    format!(
        r#"  %g = const f32[4] [1.5, 0.5, 2.0, 1.0]
  %b = const f32[4] [0.1, -0.2, 0.3, 0.0]
  %m = const f32[4] [0.05, 0.1, -0.1, 0.2]
  %v = const f32[4] [1.0, 0.5, 2.0, 0.25]
  %z = BatchNormalization(%y, %g, %b, %m, %v) {{epsilon=1e-5}} : {ty}
  output %z
}}
"#
    )
}

fn graph(body: &str, out_ty: &str) -> String {
    format!("graph g {{\n{body}{}", bn4(out_ty))
}

#[test]
fn conv_without_bias() {
    let src = graph(
        "  input %x : f32[1,3,6,6]\n  %w = const f32[4,3,3,3] random(1)\n  %y = Conv(%x, %w) {pads=[1,1,1,1]} : f32[1,4,6,6]\n",
        "f32[1,4,6,6]",
    );
    let (before, after, _) = run_passes(&src, &FOLDS);
    assert_same(&before, &after, TOL);
    assert_eq!(count(&after, "BatchNormalization"), 0);
    insta::assert_snapshot!(print(&after));
}

#[test]
fn grouped_and_depthwise_convs_with_bias() {
    for (w, group) in [("f32[4,2,3,3]", 2), ("f32[4,1,3,3]", 4)] {
        let src = graph(
            &format!(
                "  input %x : f32[1,4,5,5]\n  %w = const {w} random(2)\n  %c = const f32[4] [0.5, 0.25, -0.5, 1.0]\n  %y = Conv(%x, %w, %c) {{group={group}, strides=[2,2]}} : f32[1,4,2,2]\n"
            ),
            "f32[1,4,2,2]",
        );
        let (before, after, _) = run_passes(&src, &FOLDS);
        assert_same(&before, &after, TOL);
        assert_eq!((count(&after, "BatchNormalization"), count(&after, "Conv")), (0, 1), "group {group}");
    }
}

#[test]
fn conv_transpose_gemm_and_matmul() {
    let cases = [
        (
            "  input %x : f32[1,4,3,3]\n  %w = const f32[4,2,3,3] random(3)\n  %y = ConvTranspose(%x, %w) {group=2} : f32[1,4,5,5]\n",
            "f32[1,4,5,5]",
            "ConvTranspose",
        ),
        (
            "  input %x : f32[2,5]\n  %w = const f32[4,5] random(4)\n  %c = const f32[4] [1.0, 2.0, 3.0, 4.0]\n  %y = Gemm(%x, %w, %c) {transB=1, beta=0.5} : f32[2,4]\n",
            "f32[2,4]",
            "Gemm",
        ),
        (
            "  input %x : f32[2,5]\n  %w = const f32[5,4] random(5)\n  %y = Gemm(%x, %w) : f32[2,4]\n",
            "f32[2,4]",
            "Gemm",
        ),
        (
            "  input %x : f32[2,5]\n  %w = const f32[5,4] random(6)\n  %y = MatMul(%x, %w) : f32[2,4]\n",
            "f32[2,4]",
            "Gemm",
        ),
    ];
    for (body, ty, op) in cases {
        let (before, after, _) = run_passes(&graph(body, ty), &FOLDS);
        assert_same(&before, &after, TOL);
        assert_eq!((count(&after, "BatchNormalization"), count(&after, op)), (0, 1), "{body}");
        assert_eq!(count(&after, "Mul") + count(&after, "Add"), 0, "{body}");
    }
}

#[test]
fn conv_output_with_two_users_does_not_fold() {
    let src = r#"graph g {
  input %x : f32[1,3,4,4]
  %w = const f32[4,3,1,1] random(7)
  %y = Conv(%x, %w) : f32[1,4,4,4]
  %r = Relu(%y) : f32[1,4,4,4]
"#
    .to_string()
        + &bn4("f32[1,4,4,4]").replace("output %z", "%s = Add(%z, %r) : f32[1,4,4,4]\n  output %s");
    let (before, after, _) = run_passes(&src, &FOLDS);
    assert_same(&before, &after, TOL);
    // The BN is a standalone scale and shift now; the conv keeps its weights.
    assert_eq!((count(&after, "BatchNormalization"), count(&after, "Mul")), (0, 1));
    let w = after.value_by_name("w").expect("original weights kept");
    assert_eq!(
        after.const_value(w).map(|t| t.content_hash()),
        before.const_value(before.value_by_name("w").expect("w")).map(|t| t.content_hash())
    );
    insta::assert_snapshot!(print(&after));
}

#[test]
fn shared_weights_are_copied_not_mutated() {
    let src = r#"graph g {
  input %x : f32[1,3,4,4]
  %w = const f32[4,3,1,1] random(8)
  %y = Conv(%x, %w) : f32[1,4,4,4]
  %y2 = Conv(%x, %w) {strides=[2,2]} : f32[1,4,2,2]
"#
    .to_string()
        + &bn4("f32[1,4,4,4]").replace("output %z", "output %z, %y2");
    let (before, after, _) = run_passes(&src, &FOLDS);
    assert_same(&before, &after, TOL);
    assert_eq!(count(&after, "BatchNormalization"), 0);
    // The second conv still reads the untouched original.
    let w_before = before.const_value(before.value_by_name("w").expect("w")).expect("const").content_hash();
    let w_after = after.const_value(after.value_by_name("w").expect("w kept")).expect("const").content_hash();
    assert_eq!(w_before, w_after);
}

#[test]
fn non_constant_parameters_do_not_fold() {
    let src = r#"graph g {
  input %x : f32[1,4,2,2]
  input %mean : f32[4]
  %w = const f32[4,4,1,1] random(9)
  %y = Conv(%x, %w) : f32[1,4,2,2]
  %g = const f32[4] [1.5, 0.5, 2.0, 1.0]
  %b = const f32[4] [0.1, -0.2, 0.3, 0.0]
  %v = const f32[4] [1.0, 0.5, 2.0, 0.25]
  %z = BatchNormalization(%y, %g, %b, %mean, %v) : f32[1,4,2,2]
  output %z
}
"#;
    let (before, after, stats) = run_passes(src, &FOLDS);
    assert!(stats.iter().all(|s| s.applied == 0), "{stats:?}");
    assert_eq!(print(&before), print(&after));
}

#[test]
fn per_activation_batchnorm_becomes_affine() {
    // The old spatial = 0 form: parameters per channel and position.
    let src = r#"graph g {
  input %x : f32[2,2,3]
  %g = const f32[2,3] random(10)
  %b = const f32[2,3] random(11)
  %m = const f32[2,3] random(12)
  %v = const f32[2,3] [1.0, 2.0, 0.5, 0.25, 1.5, 3.0]
  %z = BatchNormalization(%x, %g, %b, %m, %v) : f32[2,2,3]
  output %z
}
"#;
    let (before, after, _) = run_passes(src, &FOLDS);
    assert_same(&before, &after, TOL);
    assert_eq!((count(&after, "BatchNormalization"), count(&after, "Mul"), count(&after, "Add")), (0, 1, 1));
}

fn bn_before_conv(pads: &str, out: &str) -> String {
    format!(
        r#"graph g {{
  input %x : f32[1,4,4,4]
  %g = const f32[4] [1.5, 0.5, 2.0, 1.0]
  %b = const f32[4] [0.1, -0.2, 0.3, 0.0]
  %m = const f32[4] [0.05, 0.1, -0.1, 0.2]
  %v = const f32[4] [1.0, 0.5, 2.0, 0.25]
  %n = BatchNormalization(%x, %g, %b, %m, %v) : f32[1,4,4,4]
  %w = const f32[2,4,3,3] random(13)
  %y = Conv(%n, %w) {{pads={pads}}} : {out}
  output %y
}}
"#
    )
}

#[test]
fn batchnorm_before_conv_folds_only_without_padding() {
    let (before, after, _) = run_passes(&bn_before_conv("[0,0,0,0]", "f32[1,2,2,2]"), &FOLDS);
    assert_same(&before, &after, TOL);
    assert_eq!((count(&after, "Mul"), count(&after, "Add"), count(&after, "Conv")), (0, 0, 1));
    insta::assert_snapshot!("bn_before_unpadded_conv", print(&after));

    // With zero padding the shift cannot move into the conv (padded zeros are not shifted), so
    // the scale and shift stay in front of it.
    let (before, after, _) = run_passes(&bn_before_conv("[1,1,1,1]", "f32[1,2,4,4]"), &FOLDS);
    assert_same(&before, &after, TOL);
    assert_eq!((count(&after, "BatchNormalization"), count(&after, "Mul"), count(&after, "Add")), (0, 1, 1));
}

#[test]
fn a_scale_alone_folds_into_a_padded_conv() {
    let src = r#"graph g {
  input %x : f32[1,4,4,4]
  %s = const f32[1,4,1,1] [2.0, 0.5, -1.0, 3.0]
  %n = Mul(%x, %s) : f32[1,4,4,4]
  %w = const f32[2,4,3,3] random(14)
  %y = Conv(%n, %w) {pads=[1,1,1,1]} : f32[1,2,4,4]
  output %y
}
"#;
    let (before, after, _) = run_passes(src, &FOLDS);
    assert_same(&before, &after, TOL);
    assert_eq!(count(&after, "Mul"), 0);
}

#[test]
fn tf2onnx_scale_and_shift_after_conv() {
    // tf2onnx leaves BN after a biased conv as Mul then Add by [1, C, 1, 1] constants.
    let src = r#"graph g {
  input %x : f32[1,3,5,5]
  %w = const f32[4,3,3,3] random(15)
  %c = const f32[4] [0.1, 0.2, 0.3, 0.4]
  %y = Conv(%x, %w, %c) : f32[1,4,3,3]
  %s = const f32[1,4,1,1] [1.5, 0.5, 2.0, 1.0]
  %t = const f32[1,4,1,1] [-0.1, 0.2, 0.0, 0.3]
  %a = Mul(%y, %s) : f32[1,4,3,3]
  %z = Add(%a, %t) : f32[1,4,3,3]
  %k = const f32[5] [1.0, 1.0, 1.0, 1.0, 1.0]
  output %z
}
"#;
    let (before, after, _) = run_passes(src, &FOLDS);
    assert_same(&before, &after, TOL);
    assert_eq!((count(&after, "Mul"), count(&after, "Add"), count(&after, "Conv")), (0, 0, 1));
    insta::assert_snapshot!(print(&after));
    // A constant that broadcasts along the width, not the channels, is not per-channel.
    let src = src.replace("%s = const f32[1,4,1,1] [1.5, 0.5, 2.0, 1.0]", "%s = const f32[3] [1.5, 0.5, 2.0]");
    let (before, after, _) = run_passes(&src, &FOLDS);
    assert_same(&before, &after, TOL);
    assert_eq!(count(&after, "Mul"), 1);
}
