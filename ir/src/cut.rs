//! Feature extraction: cutting a graph so that chosen intermediate values become its outputs.
//!
//! Run right after import, before any optimisation pass: passes may fuse a value into its
//! consumer, and a value that is a graph output is one they must keep materialised.
//!
//! Inputs: graph inputs that the new outputs still depend on are kept, in their original order;
//! the others are dropped, so the cut model asks only for data it reads (and needs no shape for
//! an input it ignores). ONNX's `onnx.utils.extract_model(path, out, input_names, output_names)`
//! instead keeps every input it is given; on models whose inputs all feed the chosen values (as
//! in every CNN with one image input) the two agree.

use std::collections::HashSet;

use crate::error::{CutError, Result};
use crate::graph::{Graph, ValueId};
use crate::ops::Op;
use crate::text::print::value_ref;

/// How many similar names an unknown-name error lists.
const CLOSEST: usize = 5;

/// Makes the values named `outputs` the graph's outputs, in that order, and removes every node
/// they do not depend on, including graph inputs they do not read. A name is a value name as
/// `incept inspect` prints it, with or without its `%` and quotes. Computed values only: a graph
/// input or a constant is refused, as is a name given twice. On error the graph is unchanged.
pub fn cut(g: &mut Graph, outputs: &[impl AsRef<str>]) -> Result<()> {
    if outputs.is_empty() {
        return Err(CutError::NoOutputs.into());
    }
    let mut chosen: Vec<ValueId> = Vec::with_capacity(outputs.len());
    for name in outputs {
        let name = name.as_ref();
        let v = lookup(g, name).ok_or_else(|| CutError::UnknownValue {
            name: name.to_string(),
            closest: closest_names(g, name, CLOSEST),
        })?;
        let value_name = g.value(v).name.clone();
        match g.node(v.node).op {
            Op::Input(_) => return Err(CutError::GraphInput(value_name).into()),
            Op::Const(_) => return Err(CutError::Constant(value_name).into()),
            _ => {}
        }
        if chosen.contains(&v) {
            return Err(CutError::Duplicate(value_name).into());
        }
        chosen.push(v);
    }

    let mut needed = HashSet::new();
    let mut stack: Vec<_> = chosen.iter().map(|v| v.node).collect();
    while let Some(id) = stack.pop() {
        if needed.insert(id) {
            stack.extend(g.node(id).input_values().map(|v| v.node));
        }
    }
    // Users before producers, so every removed node has no users left.
    let order = g.topo_order()?;
    g.set_outputs(chosen);
    for id in order.into_iter().rev() {
        if !needed.contains(&id) {
            g.remove_node(id)?;
        }
    }
    Ok(())
}

/// The value called `name`, or whose printed reference (`%name`, `%"a/b:0"`, or that without
/// the `%`) is `name`, so that a name copied from `incept inspect` works as printed.
fn lookup(g: &Graph, name: &str) -> Option<ValueId> {
    if let Some(v) = g.value_by_name(name) {
        return Some(v);
    }
    let printed = if name.starts_with('%') { name.to_string() } else { format!("%{name}") };
    g.node_ids()
        .flat_map(|id| (0..g.node(id).outputs.len()).map(move |slot| ValueId::new(id, slot)))
        .find(|&v| value_ref(g, v) == printed)
}

/// The `n` computed values (the only valid choices) whose names are closest to `query`: first by
/// how well `query` matches some part of the name (so `avg_pool/Mean` finds
/// `resnet50_1/avg_pool_1/Mean:0`), then by the edit distance of the whole names; case is ignored.
fn closest_names(g: &Graph, query: &str, n: usize) -> Vec<String> {
    let query = query.to_lowercase();
    let mut scored: Vec<((usize, usize), String)> = g
        .node_ids()
        .filter(|&id| !matches!(g.node(id).op, Op::Const(_) | Op::Input(_)))
        .flat_map(|id| g.node(id).outputs.iter().map(|v| v.name.clone()))
        .map(|name| {
            let lower = name.to_lowercase();
            ((edit_distance(&query, &lower, true), edit_distance(&query, &lower, false)), name)
        })
        .collect();
    scored.sort();
    scored.into_iter().take(n).map(|(_, name)| name).collect()
}

/// Levenshtein distance in characters from `a` to `b`, or with `within` to the closest
/// substring of `b` (the rest of `b` costs nothing).
fn edit_distance(a: &str, b: &str, within: bool) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = if within { vec![0; b.len() + 1] } else { (0..=b.len()).collect() };
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    if within { row.iter().copied().min().unwrap_or(0) } else { row[b.len()] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use crate::text;

    // Two branches off %r; %s is both an intermediate value and the input of %t.
    const SRC: &str = r#"
graph g {
  input %x : f32[1,2,4,4]
  input %unused : f32[3]
  %w = const f32[2,2,1,1] random(1)
  %c = Conv(%x, %w) {kernel_shape=[1,1]} : f32[1,2,4,4]
  %r = Relu(%c) : f32[1,2,4,4]
  %s = Sigmoid(%r) : f32[1,2,4,4]
  %t = Add(%s, %r) : f32[1,2,4,4]
  %p = GlobalAveragePool(%r) : f32[1,2,1,1]
  %u = Neg(%unused) : f32[3]
  output %t, %p, %u
}
"#;

    fn graph() -> Graph {
        text::parse(SRC).expect("parse")
    }

    fn names(g: &Graph, vs: &[ValueId]) -> Vec<String> {
        vs.iter().map(|&v| g.value(v).name.clone()).collect()
    }

    fn value_names(g: &Graph) -> Vec<String> {
        let mut all: Vec<String> =
            g.node_ids().flat_map(|id| g.node(id).outputs.iter().map(|v| v.name.clone())).collect();
        all.sort();
        all
    }

    #[test]
    fn keeps_only_what_the_outputs_need() {
        let mut g = graph();
        cut(&mut g, &["p"]).expect("cut");
        crate::verify::verify(&g).expect("verify");
        assert_eq!(names(&g, g.outputs()), ["p"]);
        assert_eq!(value_names(&g), ["c", "p", "r", "w", "x"]);
        assert_eq!(g.input_names(), ["x"], "an input the outputs do not read is dropped");
    }

    #[test]
    fn several_outputs_in_the_order_given() {
        let mut g = graph();
        cut(&mut g, &["p", "c", "u"]).expect("cut");
        crate::verify::verify(&g).expect("verify");
        assert_eq!(names(&g, g.outputs()), ["p", "c", "u"]);
        assert_eq!(value_names(&g), ["c", "p", "r", "u", "unused", "w", "x"]);
        assert_eq!(g.input_names(), ["x", "unused"], "inputs keep their order");
    }

    #[test]
    fn a_value_that_is_also_consumed_stays_whole() {
        let mut g = graph();
        cut(&mut g, &["s", "t"]).expect("cut");
        crate::verify::verify(&g).expect("verify");
        assert_eq!(names(&g, g.outputs()), ["s", "t"]);
        let s = g.value_by_name("s").expect("s");
        let t = g.value_by_name("t").expect("t");
        assert_eq!(g.users(s), [(t.node, 0)], "the output keeps its consumer");
        assert_eq!(value_names(&g), ["c", "r", "s", "t", "w", "x"]);
    }

    #[test]
    fn cut_graph_computes_the_value() {
        let x = crate::Tensor::from_vec(vec![1, 2, 4, 4], (0..32).map(|i| i as f32 / 8.0 - 2.0).collect());
        let unused = crate::Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]);
        let full = crate::interp::run(&graph(), &[x.clone(), unused]).expect("run full");
        let mut g = graph();
        cut(&mut g, &["p"]).expect("cut");
        let got = crate::interp::run(&g, &[x]).expect("run cut");
        assert_eq!(got[0].bytes(), full[1].bytes());
    }

    #[test]
    fn names_as_printed_are_accepted() {
        let mut g = text::parse(
            r#"graph g {
  input %x : f32[1,4]
  %"a/b:0" = Relu(%x) : f32[1,4]
  %y = Neg(%"a/b:0") : f32[1,4]
  output %y
}"#,
        )
        .expect("parse");
        cut(&mut g, &[r#"%"a/b:0""#]).expect("cut with the printed reference");
        assert_eq!(names(&g, g.outputs()), ["a/b:0"]);
    }

    #[test]
    fn unknown_name_lists_the_closest() {
        let mut g = graph();
        let before = text::print(&g).expect("print");
        let err = cut(&mut g, &["sigmoid"]).expect_err("unknown");
        assert_eq!(text::print(&g).expect("print"), before, "a failed cut leaves the graph as it was");
        match &err {
            Error::Cut(CutError::UnknownValue { name, closest }) => {
                assert_eq!(name, "sigmoid");
                assert_eq!(closest.len(), CLOSEST);
                assert!(
                    !closest.iter().any(|c| c == "w" || c == "x"),
                    "only computed values are candidates: {closest:?}"
                );
            }
            other => panic!("{other}"),
        }
        let err = cut(&mut g, &["tt"]).expect_err("unknown").to_string();
        assert!(err.starts_with("the model has no value 'tt'; the closest names are 't'"), "{err}");
    }

    #[test]
    fn names_matching_a_part_come_first() {
        let mut g = text::parse(
            r#"graph g {
  input %x : f32[1,4]
  %"net/avg_pool_1/Mean:0" = Relu(%x) : f32[1,4]
  %b = Neg(%"net/avg_pool_1/Mean:0") : f32[1,4]
  output %b
}"#,
        )
        .expect("parse");
        for query in ["avg_pool_1/Mean", "avg_pool/mean"] {
            match cut(&mut g, &[query]) {
                Err(Error::Cut(CutError::UnknownValue { closest, .. })) => {
                    assert_eq!(closest[0], "net/avg_pool_1/Mean:0", "{query}")
                }
                other => panic!("{query}: {other:?}"),
            }
        }
    }

    #[test]
    fn inputs_constants_duplicates_and_nothing_are_refused() {
        let mut g = graph();
        let err = |g: &mut Graph, names: &[&str]| match cut(g, names) {
            Err(Error::Cut(e)) => e,
            other => panic!("{names:?}: {other:?}"),
        };
        assert_eq!(err(&mut g, &["x"]), CutError::GraphInput("x".into()));
        assert_eq!(err(&mut g, &["w"]), CutError::Constant("w".into()));
        assert_eq!(err(&mut g, &["r", "r"]), CutError::Duplicate("r".into()));
        assert_eq!(err(&mut g, &[]), CutError::NoOutputs);
        assert_eq!(g.outputs().len(), 3);
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", "abc", false), 3);
        assert_eq!(edit_distance("kitten", "sitting", false), 3);
        assert_eq!(edit_distance("same", "same", false), 0);
        assert_eq!(edit_distance("pool/mean", "net/pool_1/mean:0", true), 2);
        assert_eq!(edit_distance("abc", "xxabcxx", true), 0);
        assert_eq!(edit_distance("", "abc", true), 0);
    }
}
