//! The module layers ARCHITECTURE.md draws, checked on the source: no import circle in any crate,
//! and inside incept-ir each layer imports only from the layers below it (data types and
//! formatting, then attributes, ops, the graph, inference, and on top the text form, verifier,
//! interpreter, importer and cut).

use incept_tests::modgraph::ModGraph;

/// The layer of an incept-ir module, lowest first.
fn ir_layer(module: &str) -> usize {
    match module.split("::").next().unwrap_or("") {
        "dtype" | "shape" | "tensor" | "error" | "npy" | "format" => 0,
        "attrs" => 1,
        "ops" => 2,
        "graph" => 3,
        "infer" => 4,
        // text, verify, interp, stats, cut, onnx and the crate root.
        _ => 5,
    }
}

fn crate_graph(dir: &str) -> ModGraph {
    let g = ModGraph::of_crate(&incept_tests::repo_root().join(dir).join("src"));
    assert!(g.edges.len() > 5, "read too few modules under {dir}/src: {:?}", g.edges.keys());
    g
}

#[test]
fn no_crate_has_an_import_circle() {
    for dir in ["ir", "compiler", "runtime"] {
        let circles = crate_graph(dir).circles();
        assert!(circles.is_empty(), "{dir}: modules that import each other, directly or around a circle: {circles:?}");
    }
}

#[test]
fn ir_layers_import_only_downward() {
    let g = crate_graph("ir");
    let up = g.upward(ir_layer);
    assert!(up.is_empty(), "incept-ir imports that reach up a layer:\n  {}", up.join("\n  "));
    // The layers are the ones the table above names: every layer has modules.
    for layer in 0..=5 {
        assert!(g.edges.keys().any(|m| ir_layer(m) == layer), "no incept-ir module in layer {layer}");
    }
}

fn sources(files: &[(&str, &str)]) -> ModGraph {
    let files: Vec<(String, String)> = files.iter().map(|(m, t)| (m.to_string(), t.to_string())).collect();
    ModGraph::of_sources(&files)
}

/// The reader finds the imports these tests rely on, and both checks fail on the faults they
/// exist to catch (the two this crate had: graph <-> infer, attributes calling the printer).
#[test]
fn the_checks_see_imports_and_fail_on_circles_and_upward_imports() {
    let g = sources(&[
        ("", "pub mod ops;\npub use tensor::Tensor;\n"),
        ("tensor", "pub struct Tensor;"),
        ("error", "#[macro_export]\nmacro_rules! invalid { () => {} }"),
        ("ops", "pub mod conv;\npub use conv::Conv; // a parent naming its child is not an edge\n"),
        ("ops::binary", ""),
        ("ops::conv", "use super::{binary::{self, X}, Op};\nfn f() { crate::invalid!(); let t = crate::Tensor; }"),
        ("graph", "use crate::{infer::infer_op, ops::Op as O};"),
        ("infer", "pub(crate) use crate::graph::Graph;"),
        ("attrs", "fn f() -> String { crate::text::print::format_const() }"),
        ("text", ""),
        ("text::print", "// use crate::graph::Graph; (a comment)\nfn f() {}"),
    ]);
    let edges = |m: &str| g.edges[m].iter().cloned().collect::<Vec<_>>();
    assert_eq!(edges("ops::conv"), ["error", "ops", "ops::binary", "tensor"]);
    assert_eq!(edges("ops"), Vec::<String>::new());
    assert_eq!(edges("graph"), ["infer", "ops"]);
    assert_eq!(edges("text::print"), Vec::<String>::new());
    assert_eq!(g.circles(), [["graph", "infer"]]);
    let up = g.upward(ir_layer);
    assert!(up.contains(&"attrs -> text::print".to_string()), "{up:?}");
    assert!(up.contains(&"graph -> infer".to_string()), "{up:?}");
    assert!(!up.iter().any(|e| e.starts_with("ops::conv")), "{up:?}");
}
