//! fold-pad: an explicit zero Pad merges into the following Conv or pool where that is exact.

mod common;
use common::*;

fn padded(pad_value: &str, mode: &str, consumer: &str, out: &str, pre: &str) -> String {
    format!(
        r#"graph g {{
  input %x : f32[1,2,5,5]
{pre}  %pads = const i64[8] [0, 0, 1, 2, 0, 0, 1, 0]
{pad_value}  %p = Pad(%src, %pads{}) {{mode="{mode}"}} : f32[1,2,7,7]
  %y = {consumer} : {out}
  output %y
}}
"#,
        if pad_value.is_empty() { "" } else { ", %v" }
    )
}

const CONV: &str = "Conv(%p, %w) {pads=[0,1,0,1]}";

fn conv_src(pad_value: &str, mode: &str) -> String {
    padded(
        pad_value,
        mode,
        CONV,
        "f32[1,3,5,7]",
        "  %src = Relu(%x) : f32[1,2,5,5]\n  %w = const f32[3,2,3,3] random(1)\n",
    )
}

#[test]
fn zero_pad_merges_into_conv() {
    let (before, after, _) = run_passes(&conv_src("", "constant"), &["fold-pad"]);
    assert_same(&before, &after, 0.0);
    assert_eq!(count(&after, "Pad"), 0);
    insta::assert_snapshot!(print(&after));
    // An explicit zero value is the same.
    let (_, after, _) = run_passes(&conv_src("  %v = const f32[] 0.0\n", "constant"), &["fold-pad"]);
    assert_eq!(count(&after, "Pad"), 0);
}

#[test]
fn other_pads_stay() {
    for (value, mode) in [("  %v = const f32[] 1.0\n", "constant"), ("", "reflect"), ("", "edge")] {
        let (before, after, stats) = run_passes(&conv_src(value, mode), &["fold-pad"]);
        assert_eq!(stats[0].applied, 0, "{mode} {value}");
        assert_eq!(print(&before), print(&after));
    }
}

#[test]
fn average_pool_counts_the_folded_padding() {
    let pool = "AveragePool(%p) {kernel_shape=[3,3], strides=[2,2]}";
    let src = padded("", "constant", pool, "f32[1,2,3,3]", "  %src = Relu(%x) : f32[1,2,5,5]\n");
    let (before, after, _) = run_passes(&src, &["fold-pad"]);
    assert_same(&before, &after, 1e-6);
    assert!(print(&after).contains("count_include_pad=1"), "{}", print(&after));
    // A pool that pads on its own and excludes its padding from the average cannot take the
    // explicit zeros, which it must count.
    let pool = "AveragePool(%p) {kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]}";
    let src = padded("", "constant", pool, "f32[1,2,4,4]", "  %src = Relu(%x) : f32[1,2,5,5]\n");
    let (_, after, stats) = run_passes(&src, &["fold-pad"]);
    assert_eq!((stats[0].applied, count(&after, "Pad")), (0, 1));
}

#[test]
fn max_pool_folds_only_non_negative_input() {
    let pool = "MaxPool(%p) {kernel_shape=[3,3], strides=[2,2]}";
    let src = padded("", "constant", pool, "f32[1,2,3,3]", "  %src = Relu(%x) : f32[1,2,5,5]\n");
    let (before, after, _) = run_passes(&src, &["fold-pad"]);
    assert_same(&before, &after, 0.0);
    assert_eq!(count(&after, "Pad"), 0);
    // Without the Relu a padded zero can be the maximum.
    let src = padded("", "constant", pool, "f32[1,2,3,3]", "  %src = Neg(%x) : f32[1,2,5,5]\n");
    let (_, after, _) = run_passes(&src, &["fold-pad"]);
    assert_eq!(count(&after, "Pad"), 1);
}

/// A u8 map quantized from the f32 input, padded with `pad_value`, into a QLinearConv whose
/// input zero point is 7.
fn qconv_src(pad_value: u8) -> String {
    let w: Vec<String> = (0..36).map(|i| ((i * 37) % 255 - 127).to_string()).collect();
    format!(
        r#"graph g {{
  input %x : f32[1,2,5,5]
  %s = const f32[] 0.01
  %z = const u8[] 7
  %q = QuantizeLinear(%x, %s, %z) : u8[1,2,5,5]
  %pads = const i64[8] [0, 0, 1, 2, 0, 0, 1, 0]
  %v = const u8[] {pad_value}
  %p = Pad(%q, %pads, %v) {{mode="constant"}} : u8[1,2,7,7]
  %w = const i8[2,2,3,3] [{}]
  %ws = const f32[] 0.02
  %wz = const i8[] 0
  %ys = const f32[] 0.05
  %yz = const u8[] 100
  %y = QLinearConv(%p, %s, %z, %w, %ws, %wz, %ys, %yz) {{pads=[0,1,0,1]}} : u8[1,2,5,7]
  output %y
}}
"#,
        w.join(", ")
    )
}

#[test]
fn zero_point_pad_merges_into_qlinear_conv() {
    let (before, after, _) = run_passes(&qconv_src(7), &["fold-pad"]);
    assert_same(&before, &after, 0.0);
    assert_eq!(count(&after, "Pad"), 0);
    assert!(print(&after).contains("pads=[1, 3, 1, 1]"), "{}", print(&after));
    // Any other value is not what the conv's own padding adds.
    let (before, after, stats) = run_passes(&qconv_src(0), &["fold-pad"]);
    assert_eq!(stats[0].applied, 0);
    assert_eq!(print(&before), print(&after));
}

/// A u8 map padded with `pad_value` into a 3x3 stride-2 MaxPool.
fn int_max_src(pad_value: u8) -> String {
    format!(
        r#"graph g {{
  input %x : f32[1,2,5,5]
  %s = const f32[] 0.01
  %z = const u8[] 40
  %q = QuantizeLinear(%x, %s, %z) : u8[1,2,5,5]
  %pads = const i64[8] [0, 0, 1, 2, 0, 0, 1, 0]
  %v = const u8[] {pad_value}
  %p = Pad(%q, %pads, %v) {{mode="constant"}} : u8[1,2,7,7]
  %y = MaxPool(%p) {{kernel_shape=[3,3], strides=[2,2]}} : u8[1,2,3,3]
  output %y
}}
"#
    )
}

#[test]
fn low_end_pad_merges_into_integer_max_pool() {
    // Inputs in [-1, 1) with zero point 40: many below the zero point, none below 0.
    let (before, after, _) = run_passes(&int_max_src(0), &["fold-pad"]);
    assert_same(&before, &after, 0.0);
    assert_eq!(count(&after, "Pad"), 0, "{}", print(&after));
    // Padding with the zero point can win a max over smaller values: it stays.
    let (_, after, stats) = run_passes(&int_max_src(40), &["fold-pad"]);
    assert_eq!((stats[0].applied, count(&after, "Pad")), (0, 1));
}
