//! hoist-strides: a value read only at a stride is computed only where it is read.

mod common;
use common::*;

/// The last block of a Keras ResNet50 stage and the two stride-2 1x1 convs of the next stage's
/// first block that read it.
const STAGE_END: &str = r#"graph g {
  input %x : f32[1,8,9,9]
  %w1 = const f32[4,8,1,1] random(1)
  %w2 = const f32[4,4,3,3] random(2)
  %w3 = const f32[8,4,1,1] random(3)
  %wa = const f32[6,8,1,1] random(4)
  %wb = const f32[6,8,1,1] random(5)
  %a = Conv(%x, %w1) : f32[1,4,9,9]
  %ar = Relu(%a) : f32[1,4,9,9]
  %b = Conv(%ar, %w2) {pads=[1,1,1,1]} : f32[1,4,9,9]
  %br = Relu(%b) : f32[1,4,9,9]
  %c = Conv(%br, %w3) : f32[1,8,9,9]
  %s = Add(%c, %x) : f32[1,8,9,9]
  %out = Relu(%s) : f32[1,8,9,9]
  %main = Conv(%out, %wa) {strides=[2,2]} : f32[1,6,5,5]
  %short = Conv(%out, %wb) {strides=[2,2]} : f32[1,6,5,5]
  output %main, %short
}
"#;

#[test]
fn stage_end_is_computed_at_the_stride() {
    let (before, after, stats) = run_passes(STAGE_END, &["hoist-strides"]);
    // Same formula at every kept position: the same bits.
    assert_same(&before, &after, 0.0);
    assert!(stats[0].macs_after * 2 < stats[0].macs_before, "{:?}", stats[0]);
    // The 3x3 conv takes the stride; %x is read in full by the first conv, so the residual gets
    // a Slice.
    let text = print(&after);
    assert_eq!(count(&after, "Slice"), 1, "{text}");
    assert!(text.contains("kernel_shape=[3, 3], strides=[2, 2]"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn a_full_reader_or_other_steps_keep_the_value() {
    let cases = [
        // One reader at stride 1.
        STAGE_END.replace(
            "%short = Conv(%out, %wb) {strides=[2,2]} : f32[1,6,5,5]",
            "%short = Conv(%out, %wb) : f32[1,6,9,9]",
        ),
        // Readers at different strides.
        STAGE_END.replace(
            "%short = Conv(%out, %wb) {strides=[2,2]} : f32[1,6,5,5]",
            "%short = Conv(%out, %wb) {strides=[3,3]} : f32[1,6,3,3]",
        ),
        // A padded 1x1 reader reads the border too.
        STAGE_END.replace(
            "%short = Conv(%out, %wb) {strides=[2,2]} : f32[1,6,5,5]",
            "%short = Conv(%out, %wb) {strides=[2,2], pads=[1,1,1,1]} : f32[1,6,6,6]",
        ),
        // The value is a graph output.
        STAGE_END.replace("output %main, %short", "output %main, %short, %out"),
    ];
    for src in cases {
        let (before, after, stats) = run_passes(&src, &["hoist-strides"]);
        assert_eq!(stats[0].applied, 0, "{}", print(&after));
        assert_eq!(print(&before), print(&after));
    }
}

#[test]
fn strided_slice_readers_and_pools() {
    // A Slice that steps the spatial dims is a strided reader too; a pool takes the stride like
    // a conv (7 -> 4 at step 2, as the Slice counts).
    let src = r#"graph g {
  input %x : f32[1,3,7,7]
  %starts = const i64[2] [0, 0]
  %ends = const i64[2] [100, 100]
  %axes = const i64[2] [2, 3]
  %steps = const i64[2] [2, 2]
  %p = MaxPool(%x) {kernel_shape=[3,3], pads=[1,1,1,1]} : f32[1,3,7,7]
  %y = Slice(%p, %starts, %ends, %axes, %steps) : f32[1,3,4,4]
  output %y
}
"#;
    let (before, after, stats) = run_passes(src, &["hoist-strides"]);
    assert_same(&before, &after, 0.0);
    assert_eq!((stats[0].applied, count(&after, "Slice")), (1, 0), "{}", print(&after));
    // Ceil mode's last window can start in the padding: left alone.
    let ceil = src.replace("pads=[1,1,1,1]}", "pads=[1,1,1,1], ceil_mode=1}");
    let (_, _, stats) = run_passes(&ceil, &["hoist-strides"]);
    assert_eq!(stats[0].applied, 0);
    // A Slice that starts past 0 reads other positions.
    let offset = src
        .replace("%starts = const i64[2] [0, 0]", "%starts = const i64[2] [1, 0]")
        .replace("f32[1,3,4,4]", "f32[1,3,3,4]");
    let (_, _, stats) = run_passes(&offset, &["hoist-strides"]);
    assert_eq!(stats[0].applied, 0);
}

#[test]
fn broadcast_operands_stay_and_planes_are_sliced() {
    let src = r#"graph g {
  input %x : f32[1,2,6,6]
  input %plane : f32[1,1,6,6]
  %k = const f32[1,2,1,1] [0.5, -2.0]
  %w = const f32[2,2,3,3] random(1)
  %wr = const f32[3,2,1,1] random(2)
  %c = Conv(%x, %w) {pads=[1,1,1,1]} : f32[1,2,6,6]
  %m = Mul(%c, %k) : f32[1,2,6,6]
  %s = Sub(%plane, %m) : f32[1,2,6,6]
  %y = Conv(%s, %wr) {strides=[2,1]} : f32[1,3,3,6]
  output %y
}
"#;
    let (before, after, _) = run_passes(src, &["hoist-strides"]);
    assert_same(&before, &after, 0.0);
    let text = print(&after);
    // The per-channel constant is used as it is; the plane is sampled; the conv steps rows only.
    assert_eq!(count(&after, "Slice"), 1, "{text}");
    assert!(text.contains("kernel_shape=[3, 3], strides=[2, 1]"), "{text}");
    assert!(text.contains("Mul(%"), "{text}");
}
