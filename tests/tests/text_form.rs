//! The IR text form: small graphs written as text, printed back (insta snapshots), and the parser's
//! error messages.

use incept_ir::text::{self, ConstPool};
use incept_ir::{Tensor, interp, verify};

fn roundtrip(src: &str) -> String {
    let g = text::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    verify::verify(&g).expect("verify");
    let printed = text::print(&g).expect("print");
    let again = text::parse_with(&printed, &ConstPool::from_graph(&g)).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(printed, text::print(&again).expect("print"), "print -> parse -> print differs");
    printed
}

const CONV_BLOCK: &str = r#"
graph "block" {
  input %x : f32[N,3,8,8]
  %w = const f32[4,3,3,3] random(1)
  %b = const f32[4] [0.5, -0.5, 0.25, 0.0]
  ; defaults are filled in and auto_pad is resolved when the node is built
  %y = Conv(%x, %w, %b) {auto_pad="SAME_UPPER", strides=[2,2]} : f32[N,4,4,4]
  %z = Relu(%y) : f32[N,4,4,4]
  %p = MaxPool(%z) {kernel_shape=[2,2], strides=[2,2]} : f32[N,4,2,2] @"pool one"
  output %p
}
"#;

#[test]
fn conv_block_prints_canonically() {
    insta::assert_snapshot!(roundtrip(CONV_BLOCK));
}

#[test]
fn many_ops_round_trip() {
    let src = r#"
graph many {
  input %x : f32[1,4,6,6]
  input %"odd name:0" : f32[1,4,6,6]
  %s = Add(%x, %"odd name:0") : f32[1,4,6,6]
  %axes = const i64[2] [2, 3]
  %m = ReduceMean(%s, %axes) {keepdims=1} : f32[1,4,1,1]
  %lo = const f32[] 0.0
  %hi = const f32[] 6.0
  %c = Clip(%s, %lo, %hi) : f32[1,4,6,6]
  %pads = const i64[8] [0, 0, 1, 1, 0, 0, 1, 1]
  %pd = Pad(%c, %pads) {mode="reflect"} : f32[1,4,8,8]
  %t = Transpose(%pd) {perm=[0,2,3,1]} : f32[1,8,8,4]
  %shape = Shape(%t) : i64[4]
  %a, %b = Split(%t) {axis=3} : f32[1,8,8,2], f32[1,8,8,2]
  %cat = Concat(%b, %a) {axis=-1} : f32[1,8,8,4]
  %f = Flatten(%cat) {axis=1} : f32[1,256]
  %sm = Softmax(%f) : f32[1,256]
  %d2s = DepthToSpace(%x) {blocksize=2} : f32[1,1,12,12]
  %scales = const f32[4] [1.0, 1.0, 2.0, 2.0]
  %r = Resize(%d2s, _, %scales) {mode="linear"} : f32[1,1,24,24]
  %hs = HardSigmoid(%m) {alpha=0.25} : f32[1,4,1,1]
  %lr = LeakyRelu(%hs) : f32[1,4,1,1]
  output %sm, %r, %lr, %shape
}
"#;
    let printed = roundtrip(src);
    assert!(printed.contains(r#"input %"odd name:0" : f32[1,4,6,6]"#), "{printed}");
    assert!(printed.contains("Softmax(%f) {axis=1}"), "{printed}");
    assert!(printed.contains(r#"coordinate_transformation_mode="half_pixel""#), "{printed}");
}

#[test]
fn parsed_graph_runs() {
    let g = text::parse(CONV_BLOCK).expect("parse");
    let mut bound = g.clone();
    bound.bind_dims(&[("N".to_string(), 2)].into_iter().collect()).expect("bind");
    let x = Tensor::from_vec(vec![2, 3, 8, 8], (0..384).map(|i| (i % 7) as f32 - 3.0).collect());
    let out = interp::run(&bound, &[x]).expect("run");
    assert_eq!(out[0].shape(), &[2, 4, 2, 2]);
    // The same input through the symbolic graph gives the same bits.
    let x = Tensor::from_vec(vec![2, 3, 8, 8], (0..384).map(|i| (i % 7) as f32 - 3.0).collect());
    let out2 = interp::run(&g, &[x]).expect("run symbolic");
    assert_eq!(out[0].bytes(), out2[0].bytes());
}

fn parse_err(src: &str) -> String {
    match text::parse(src) {
        Ok(_) => panic!("parsed a bad graph:\n{src}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parse_errors_point_at_the_problem() {
    let e = parse_err("graph g {\n  input %x : f32[2]\n  %y = Relu(%q) : f32[2]\n  output %y\n}");
    assert!(e.contains("line 3") && e.contains("%q is not defined"), "{e}");
    let e = parse_err("graph g {\n  input %x : f32[2]\n  %y = Relu(%x) : f32[3]\n  output %y\n}");
    assert!(e.contains("declared f32[3] but infers as f32[2]"), "{e}");
    let e = parse_err("graph g {\n  input %x : f32[2]\n  %y = Frobnicate(%x) : f32[2]\n  output %y\n}");
    assert!(e.contains("Frobnicate"), "{e}");
    let e = parse_err("graph g {\n  input %x : f32[2]\n  %y = Relu(%x) {alpha=1.0} : f32[2]\n  output %y\n}");
    assert!(e.contains("alpha"), "{e}");
    let e = parse_err("graph g {\n  %w = const f32[64] #deadbeef\n  output %w\n}");
    assert!(e.contains("elided") && e.contains("#deadbeef"), "{e}");
    let e = parse_err("graph g {\n  input %x : f32[2]\n  output %x\n");
    assert!(e.contains("expected a statement"), "{e}");
    let e = parse_err("graph g {\n  %c = const f32[3] [1.0, 2.0]\n  output %c\n}");
    assert!(e.contains("needs 3 values"), "{e}");
    // A second output line once replaced the first without a word.
    let e = parse_err("graph g {\n  input %x : f32[2]\n  %y = Relu(%x) : f32[2]\n  output %x\n  output %y\n}");
    assert!(e.contains("line 5") && e.contains("second 'output' line"), "{e}");
}

#[test]
fn floats_round_trip_exactly() {
    let src = "graph g {\n  %c = const f32[6] [0.1, 1e-30, -3.4028235e38, 1.0, nan, -inf]\n  output %c\n}\n";
    let g = text::parse(src).expect("parse");
    let c = g.const_value(g.outputs()[0]).expect("const");
    let v = c.view::<f32>().expect("f32");
    assert_eq!(v[0], 0.1f32);
    assert_eq!(v[1], 1e-30f32);
    assert_eq!(v[2], -3.4028235e38f32);
    assert!(v[4].is_nan() && v[5] == f32::NEG_INFINITY);
    assert_eq!(roundtrip(src), text::print(&g).expect("print"));
}

#[test]
fn empty_and_comment_only_text_is_a_parse_error() {
    // These used to step the parser's position back past the first token (a panic).
    for src in ["", "   ", "\n\n", "; comment\n", "; only a comment", "  ; indented\n  ; two\n"] {
        let e = parse_err(src);
        assert!(e.contains("expected 'graph', found Eof"), "{src:?}: {e}");
    }
    let e = parse_err("graph g {\n  output");
    assert!(e.contains("expected a %value, found Eof"), "{e}");
    let e = parse_err("graph g {\n  %c = const f32[1]");
    assert!(e.contains("expected a value, found Eof"), "{e}");
    let e = parse_err("graph g {\n  input %x : f32[2]\n  %y = Relu(%x) {alpha=");
    assert!(e.contains("expected a number, found Eof"), "{e}");
}

#[test]
fn errors_point_at_the_offending_token() {
    // The error names the token it stopped at, not the one before it.
    let e = parse_err("graph g {\n  input %x : f32[2]\n  output %x, %nope\n}");
    assert!(e.contains("line 3, column 14") && e.contains("%nope"), "{e}");
    let e = parse_err("graph g {\n  %c = const f32[2] [1.0, oops]\n  output %c\n}");
    assert!(e.contains("line 2, column 27") && e.contains("oops"), "{e}");
}

#[test]
fn malformed_unicode_escapes_are_parse_errors() {
    for s in [r#""\u}""#, r#""\ux}""#, r#""\u{}""#, r#""\u{zz}""#, r#""\u{110000}""#, r#""\u"#] {
        let src = format!("graph {s} {{\n}}");
        let e = parse_err(&src);
        assert!(e.contains("escape") || e.contains("unterminated"), "{src}: {e}");
    }
    let g = text::parse("graph \"\\u{41}b\" {\n  %c = const f32[1] [1.0]\n  output %c\n}").expect("a valid escape");
    assert_eq!(g.name, "Ab");
}

/// An Elementwise expression holds at most `Expr::MAX_OPS` ops: the parser takes that many and
/// refuses more with an error, however deep the nesting (no input can recurse the parser, or any
/// later walk over the expression, deeper than that).
#[test]
fn elementwise_expressions_are_bounded() {
    let nested = |n: usize| {
        let expr = format!("{}%x{}", "relu(".repeat(n), ")".repeat(n));
        format!("graph g {{\n  input %x : f32[1,4]\n  %y = Elementwise(%x) expr({expr}) : f32[1,4]\n  output %y\n}}\n")
    };
    let max = incept_ir::ops::Expr::MAX_OPS;
    incept_ir::text::parse(&nested(max)).expect("an expression of MAX_OPS ops parses");
    for n in [max + 1, 100_000] {
        let e = parse_err(&nested(n));
        assert!(e.contains(&format!("more than {max} ops")), "{n}: {e}");
    }
}
