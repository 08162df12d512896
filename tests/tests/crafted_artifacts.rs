//! Artifacts whose tables disagree with their code must be refused, never run: each variant here
//! is mini_resnet's artifact with one table field edited and the digest recomputed (what a writer
//! bug, a partial edit or a file assembled from two builds looks like), covering every field class
//! the hardening probe of issue 20 tried. Each must fail to load with an error, or load and give
//! exactly the original's output bytes; none may crash, abort, panic or compute something else.

use std::panic::{AssertUnwindSafe, catch_unwind};

use incept_runtime::artifact::{ArtifactInfo, decode, encode};
use incept_runtime::{DType, Model, Plan, RunOptions, Slot, Tensor};
use incept_tests::fixtures_dir;

/// The base plan (compiled for this CPU's widest tier, so that its steps call microkernels too),
/// its input and its output.
fn base() -> (Plan, ArtifactInfo, Tensor, Vec<u8>) {
    let opts = incept_compiler::CompileOptions { threads: 1, ..Default::default() };
    let model = incept_compiler::compile(&fixtures_dir().join("mini_resnet.onnx"), &opts).expect("compile");
    let info = incept_compiler::artifact_info(&opts);
    let input = incept_runtime::npy::read(fixtures_dir().join("mini_resnet.input.npy")).expect("input");
    let output = model.run(std::slice::from_ref(&input)).expect("run")[0].bytes().to_vec();
    (model.plan().clone(), info, input, output)
}

/// One edit of the plan's tables: what it changes, and the change.
type Edit = (String, Box<dyn Fn(&mut Plan)>);

fn edits(plan: &Plan) -> Vec<Edit> {
    let mut out: Vec<Edit> = vec![];
    let mut add = |what: String, f: Box<dyn Fn(&mut Plan)>| out.push((what, f));
    let big = [1usize << 32, 1 << 40, 1 << 47, 1 << 62, 1 << 63, usize::MAX];
    // The step with the most operands (a conv with its microkernels), and the first step of each
    // operand slot kind.
    let conv = (0..plan.steps.len()).max_by_key(|&i| plan.steps[i].operands.len()).expect("steps");
    let first = |want: fn(&Slot) -> bool| {
        plan.steps.iter().enumerate().find_map(|(i, s)| s.operands.iter().position(|o| want(&o.slot)).map(|j| (i, j)))
    };
    let arena_op = first(|s| matches!(s, Slot::Arena)).expect("an arena operand");
    let weight_op = first(|s| matches!(s, Slot::Weights)).expect("a weights operand");
    let input_op = first(|s| matches!(s, Slot::Input(_))).expect("an input operand");
    let output_op = first(|s| matches!(s, Slot::Output(_))).expect("an output operand");
    let kernel_op = first(|s| matches!(s, Slot::Kernel(_)));

    // Tile counts.
    let t = plan.steps[conv].tiles;
    for tiles in [0, 1, t - 1, t + 1, 1000].into_iter().chain(big) {
        if tiles != t {
            add(format!("step {conv} covers {tiles} tiles"), Box::new(move |p| p.steps[conv].tiles = tiles));
        }
    }
    // Operand offsets and extents.
    let (arena_size, weights_len) = (plan.arena_size, plan.weights.len());
    for (what, (s, o)) in [("arena", arena_op), ("weights", weight_op), ("input", input_op), ("output", output_op)] {
        let values = [1usize, 4, 64, arena_size - 4, weights_len - 4].into_iter().chain(big);
        for v in values {
            add(format!("{what} operand offset {v}"), Box::new(move |p| p.steps[s].operands[o].offset = v));
            add(format!("{what} operand extent {v}"), Box::new(move |p| p.steps[s].operands[o].extent = v));
        }
        add(
            format!("{what} operand direction flipped"),
            Box::new(move |p| {
                let op = &mut p.steps[s].operands[o];
                op.writes = !op.writes
            }),
        );
        // Another slot, with the same offset and extent.
        for slot in [
            Slot::Arena,
            Slot::Weights,
            Slot::Input(0),
            Slot::Input(1),
            Slot::Output(0),
            Slot::Helpers,
            Slot::Kernel(0),
        ] {
            if plan.steps[s].operands[o].slot != slot {
                add(format!("{what} operand moved to {slot:?}"), Box::new(move |p| p.steps[s].operands[o].slot = slot));
            }
        }
    }
    // What the artifact_run fuzz target found: the helper table's operand made a data pointer,
    // and a constant table (the last weights operand of a Winograd input step) moved to the arena.
    if let Some((s, o)) = first(|s| matches!(s, Slot::Helpers)) {
        add("the helper table moved to the arena".into(), Box::new(move |p| p.steps[s].operands[o].slot = Slot::Arena));
    }
    if let Some(s) = plan.steps.iter().position(|s| s.op == "WinogradInput") {
        let o = plan.steps[s].operands.iter().rposition(|o| o.slot == Slot::Weights).expect("a tile table");
        add(
            "a Winograd tile table moved to the arena".into(),
            Box::new(move |p| p.steps[s].operands[o].slot = Slot::Arena),
        );
    }
    if let Some((s, o)) = kernel_op {
        for k in 0..plan.kernels.len() {
            add(format!("called kernel {k}"), Box::new(move |p| p.steps[s].operands[o].slot = Slot::Kernel(k)));
        }
    }
    // Operands dropped, duplicated, reordered.
    let n = plan.steps[conv].operands.len();
    add("the conv step's last operand dropped".into(), Box::new(move |p| p.steps[conv].operands.truncate(n - 1)));
    add("the conv step's operands dropped".into(), Box::new(move |p| p.steps[conv].operands.clear()));
    add(
        "the conv step's first operand repeated".into(),
        Box::new(move |p| {
            let o = p.steps[conv].operands[0];
            p.steps[conv].operands.push(o)
        }),
    );
    add("the conv step's first two operands swapped".into(), Box::new(move |p| p.steps[conv].operands.swap(0, 1)));
    // Which kernel a step calls.
    for k in 0..plan.kernels.len() {
        if k != plan.steps[conv].kernel {
            add(format!("the conv step calls kernel {k}"), Box::new(move |p| p.steps[conv].kernel = k));
        }
    }
    add("a step calls a kernel past the table".into(), Box::new(|p| p.steps[0].kernel = p.kernels.len()));
    // The kernel table.
    for k in [0, plan.kernels.len() / 2, plan.kernels.len() - 1] {
        let other = (k + 1) % plan.kernels.len();
        add(
            format!("kernel {k} points at kernel {other}"),
            Box::new(move |p| p.kernels[k].offset = p.kernels[other].offset),
        );
        add(format!("kernel {k} starts a byte in"), Box::new(move |p| p.kernels[k].offset += 1));
        add(format!("kernel {k} is a byte shorter"), Box::new(move |p| p.kernels[k].len -= 1));
        add(format!("kernel {k} is a byte longer"), Box::new(move |p| p.kernels[k].len += 1));
        add(format!("kernel {k}'s tiles + 1"), Box::new(move |p| p.kernels[k].tiles += 1));
        add(
            format!("kernel {k} takes one more operand"),
            Box::new(move |p| {
                p.kernels[k].operands.push(incept_runtime::Need {
                    extent: 0,
                    writes: false,
                    constant: false,
                    entry: false,
                })
            }),
        );
        add(format!("kernel {k} takes no operands"), Box::new(move |p| p.kernels[k].operands.clear()));
        add(
            format!("kernel {k}'s first operand needs a byte more"),
            Box::new(move |p| {
                if let Some(n) = p.kernels[k].operands.first_mut() {
                    n.extent += 1
                }
            }),
        );
        add(
            format!("kernel {k}'s first operand's direction flipped"),
            Box::new(move |p| {
                if let Some(n) = p.kernels[k].operands.first_mut() {
                    n.writes = !n.writes
                }
            }),
        );
    }
    add("no steps".into(), Box::new(|p| p.steps.clear()));
    add(
        "the last step dropped".into(),
        Box::new(|p| {
            p.steps.pop();
        }),
    );
    add("the first two steps swapped".into(), Box::new(|p| p.steps.swap(0, 1)));
    // The arena and the status word.
    for size in [0, 1, arena_size - 4, arena_size + 8192].into_iter().chain(big) {
        add(format!("arena of {size} bytes"), Box::new(move |p| p.arena_size = size));
    }
    for at in [Some(4), Some(arena_size - 4), Some(usize::MAX - 7)] {
        add(format!("status word at {at:?}"), Box::new(move |p| p.status = at));
    }
    // Inputs and outputs.
    let shapes: [&[usize]; 9] = [
        &[0, 3, 64, 64],
        &[1, 3, 32, 32],
        &[2, 3, 64, 64],
        &[3, 64, 64],
        &[1, 64, 3, 64],
        &[0, 10],
        &[1, 1],
        &[1, 10, 1 << 40],
        &[1 << 62, 4],
    ];
    for shape in shapes {
        let s = shape.to_vec();
        add(format!("input shape {shape:?}"), Box::new(move |p| p.inputs[0].shape = s.clone()));
        let s = shape.to_vec();
        add(format!("output shape {shape:?}"), Box::new(move |p| p.outputs[0].shape = s.clone()));
    }
    for dtype in [DType::U8, DType::F64, DType::Bool, DType::I32] {
        add(format!("input dtype {dtype:?}"), Box::new(move |p| p.inputs[0].dtype = dtype));
        add(format!("output dtype {dtype:?}"), Box::new(move |p| p.outputs[0].dtype = dtype));
    }
    out
}

/// The input for a plan whose input table may have been edited: the original bytes under the
/// edited shape and dtype when their sizes agree (else there is nothing to feed it).
fn input_for(plan: &Plan, original: &Tensor) -> Option<Tensor> {
    let spec = plan.inputs.first()?;
    Tensor::from_bytes(spec.dtype, &spec.shape, original.bytes()).ok()
}

/// How one variant fared.
enum Fate {
    Refused,
    Same,
    Different,
}

/// Encodes, decodes, loads and runs a variant; a panic or a wrong output is an error.
fn fate(p: &Plan, info: &ArtifactInfo, input: &Tensor, want: &[u8]) -> Result<Fate, String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let bytes = encode(p, info);
        let (p, _) = match decode(&bytes) {
            Ok(decoded) => decoded,
            Err(_) => return Ok(Fate::Refused),
        };
        let model = match Model::new(p, &RunOptions { threads: 1 }) {
            Ok(m) => m,
            Err(_) => return Ok(Fate::Refused),
        };
        let Some(x) = input_for(model.plan(), input) else {
            return Err("loaded, but takes no input it can be fed".to_string());
        };
        match model.run(&[x]) {
            Ok(out) if out[0].bytes() == want => Ok(Fate::Same),
            Ok(_) => Ok(Fate::Different),
            Err(_) => Ok(Fate::Refused),
        }
    }));
    outcome.unwrap_or_else(|_| Err("panicked".into()))
}

/// Edited after compiling: the compiler's seal no longer matches, and every variant is refused
/// (or the edit changed nothing that matters).
#[test]
fn tables_edited_after_compiling_are_refused() {
    let (plan, info, input, want) = base();
    let edits = edits(&plan);
    assert!(edits.len() >= 118, "{} variants: fewer than the probe's", edits.len());
    let (mut refused, mut same, mut failures) = (0, 0, vec![]);
    for (what, edit) in &edits {
        let mut p = plan.clone();
        edit(&mut p);
        match fate(&p, &info, &input, &want) {
            Ok(Fate::Refused) => refused += 1,
            Ok(Fate::Same) => same += 1,
            Ok(Fate::Different) => failures.push(format!("{what}: loaded and ran, with a different output")),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    println!("{} variants edited after sealing: {refused} refused, {same} gave the original output", edits.len());
    assert!(failures.is_empty(), "{} of {} variants misbehaved:\n{}", failures.len(), edits.len(), failures.join("\n"));
}

/// Sealed as they are (as if the compiler itself had written them wrong): the table checks
/// alone must refuse every variant that would touch memory outside its slots, call code
/// outside a kernel or with the wrong operands, or size anything absurdly; none may crash,
/// abort or panic. What they cannot see is an operand moved within its slot, or two operands
/// or steps swapped: those may run and compute something else, and the seal is their guard.
#[test]
fn tables_that_disagree_with_the_code_are_refused_even_when_sealed() {
    let (plan, info, input, want) = base();
    let within = [
        "operand offset 1",
        "operand offset 4",
        "operand offset 64",
        "moved to Arena",
        "swapped",
        "status word at Some(4)",
    ];
    let (mut refused, mut ran, mut failures) = (0, 0, vec![]);
    for (what, edit) in &edits(&plan) {
        if std::env::var_os("INCEPT_TRACE_CASES").is_some() {
            eprintln!("variant: {what}");
        }
        let mut p = plan.clone();
        edit(&mut p);
        p.seal();
        match fate(&p, &info, &input, &want) {
            Ok(Fate::Refused) => refused += 1,
            Ok(Fate::Same) => ran += 1,
            Ok(Fate::Different) if within.iter().any(|w| what.contains(w)) => {
                ran += 1;
                println!("  in bounds, computes something else: {what}");
            }
            Ok(Fate::Different) => failures.push(format!("{what}: loaded and ran, with a different output")),
            Err(e) => failures.push(format!("{what}: {e}")),
        }
    }
    println!("sealed variants: {refused} refused by the table checks, {ran} ran (in bounds)");
    assert!(failures.is_empty(), "{} variants misbehaved:\n{}", failures.len(), failures.join("\n"));
    assert!(refused > 200, "only {refused} refused");
}
