//! The JIT backend end to end: compiled models against the reference interpreter and ONNX Runtime.

use incept_compiler::{CompileOptions, Fault, compile_with_report};
use incept_ir::onnx::ImportOptions;
use incept_ir::{Tensor, npy};
use incept_tests::{FIXTURES, fixtures_dir, max_rel_err};

/// An IR tensor as a runtime tensor.
pub fn to_runtime(t: &Tensor) -> incept_runtime::Tensor {
    let d = match t.dtype() {
        incept_ir::DType::F32 => incept_runtime::DType::F32,
        incept_ir::DType::I64 => incept_runtime::DType::I64,
        other => panic!("test inputs of {other}"),
    };
    incept_runtime::Tensor::from_bytes(d, t.shape(), t.bytes()).expect("tensor")
}

pub fn from_runtime(t: &incept_runtime::Tensor) -> Tensor {
    Tensor::from_vec(t.shape().to_vec(), t.to_f32_vec().expect("f32 output"))
}

#[test]
fn fixtures_match_onnx_runtime() {
    for name in FIXTURES {
        let dir = fixtures_dir();
        let input = npy::read(&dir.join(format!("{name}.input.npy"))).expect("input");
        let want = npy::read(&dir.join(format!("{name}.ort_output.npy"))).expect("ort");
        let mut import = ImportOptions::default();
        import.input_shapes.insert("input".into(), input.shape().to_vec());
        for (threads, cpu) in
            [1, 2].into_iter().flat_map(|t| incept_tests::graphs::tiers().into_iter().map(move |c| (t, c)))
        {
            let opts = CompileOptions { import: import.clone(), threads, cpu, ..Default::default() };
            let (model, report) = compile_with_report(dir.join(format!("{name}.onnx")).as_path(), &opts)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let out = model.run(&[to_runtime(&input)]).unwrap_or_else(|e| panic!("{name}: {e}"));
            let err = max_rel_err(&from_runtime(&out[0]), &want).expect("compare");
            println!(
                "{name} ({threads} threads, {cpu:?}): rel err {err:.2e}, {} kernels, {} steps, arena {} (bound {})",
                report.kernels, report.steps, report.arena_bytes, report.arena_lower_bound
            );
            assert!(err <= 1e-4, "{name}: {err:e}");
        }
        if name == "mini_inception_resnet" {
            // Its residual adds follow bias-free 1x1 convs: the operand-numbering bug of issue 7
            // reinjected must show in the output.
            let opts = CompileOptions {
                import: import.clone(),
                fault: Some(Fault::EpilogueOperandAsBias),
                ..Default::default()
            };
            let (model, _) = compile_with_report(dir.join(format!("{name}.onnx")).as_path(), &opts).expect("compile");
            let out = model.run(&[to_runtime(&input)]).expect("run");
            let err = max_rel_err(&from_runtime(&out[0]), &want).expect("compare");
            assert!(err > 1e-3, "{name}: the reinjected bug changes the output by only {err:e}");
        }
    }
}

/// The graphs of issue 7 (a Conv without bias or a Gemm without C, Add of a residual, Relu; every
/// conv path; full, per-channel and per-position residuals; residuals with a later user), built
/// by `tests/fixtures/tools/make_epilogue_repros.py`, match ONNX Runtime at -O2 at 1 and 2
/// threads, and the operand-numbering fault reinjected makes them fail.
#[test]
fn epilogue_repros_match_onnx_runtime() {
    let dir = fixtures_dir().join("epilogue");
    let mut models: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/fixtures/epilogue")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "onnx"))
        .collect();
    models.sort();
    assert!(models.len() >= 20, "{} repro models", models.len());
    let mut caught = 0;
    for path in &models {
        let name = path.file_stem().and_then(|s| s.to_str()).expect("name").to_string();
        let g = incept_ir::onnx::load(path, &ImportOptions::default()).expect("import");
        let inputs: Vec<incept_runtime::Tensor> = g
            .input_values()
            .into_iter()
            .map(|v| {
                let input = g.value(v).name.clone();
                to_runtime(&npy::read(&dir.join(format!("{name}.{input}.npy"))).expect("input"))
            })
            .collect();
        let wants: Vec<Tensor> = (0..g.outputs().len())
            .map(|k| npy::read(&dir.join(format!("{name}.ort_output_{k}.npy"))).expect("ort output"))
            .collect();
        let worst = |fault: Option<Fault>, threads: usize| {
            let opts = CompileOptions { threads, fault, ..Default::default() };
            let (model, _) = compile_with_report(path.as_path(), &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
            let outs = model.run(&inputs).unwrap_or_else(|e| panic!("{name}: {e}"));
            outs.iter()
                .zip(&wants)
                .map(|(o, w)| max_rel_err(&from_runtime(o), w).expect("compare"))
                .fold(0f64, f64::max)
        };
        for threads in [1, 2] {
            let err = worst(None, threads);
            println!("{name} ({threads} threads): rel err {err:.2e}");
            assert!(err <= 1e-4, "{name} at {threads} threads: {err:e}");
        }
        if worst(Some(Fault::EpilogueOperandAsBias), 1) > 1e-4 {
            caught += 1;
        }
    }
    // Every model has a bias-free op with an epilogue add, so the fault breaks each one.
    assert_eq!(caught, models.len(), "the reinjected bug went unnoticed on some repro models");
}

/// Every vendored ONNX backend case that the reference interpreter passes, compiled and run by the
/// JIT, matches the expected outputs; cases listed in tests/conformance/jit_exclusions.txt (each
/// with a reason) may be refused by the compiler (with an error), and an excluded case that passes
/// is reported.
#[test]
fn conformance_cases_through_the_jit() {
    use incept_tests::conformance::{case_dir, cases, import_case, read_set, test_sets};
    let root = incept_tests::repo_root();
    let excluded_ref = std::fs::read_to_string(root.join("tests/conformance/exclusions.txt")).expect("exclusions");
    let jit_excl = std::fs::read_to_string(root.join("tests/conformance/jit_exclusions.txt")).expect("jit exclusions");
    let listed = |text: &str, case: &str| {
        text.lines().any(|l| l.split('|').next().map(|c| c.trim().trim_start_matches("~ ")) == Some(case))
    };
    // Cases are independent: checked in parallel, tallied in case order.
    use rayon::prelude::*;
    enum Outcome {
        Skipped,
        Passed,
        Excluded,
        Stale(String),
        Failed(String),
    }
    let outcomes: Vec<Outcome> = cases()
        .into_par_iter()
        .map(|case| {
            if listed(&excluded_ref, &case) {
                return Outcome::Skipped;
            }
            if std::env::var_os("INCEPT_TRACE_CASES").is_some() {
                eprintln!("case {case}");
            }
            let dir = case_dir(&case);
            let result = (|| -> Result<(), String> {
                for set in test_sets(&dir)? {
                    let inputs = read_set(&set, "input")?;
                    let expected = read_set(&set, "output")?;
                    let (g, inputs) = import_case(&dir.join("model.onnx"), inputs)?;
                    // Every tier this CPU runs: the GEMM-based cases take each tier's kernels.
                    for cpu in incept_tests::graphs::tiers() {
                        let opts = CompileOptions { threads: 1, cpu, ..Default::default() };
                        let (model, _) = incept_compiler::compile_graph(g.clone(), &opts)
                            .map_err(|e| format!("compile ({cpu:?}): {e}"))?;
                        let ins: Vec<incept_runtime::Tensor> = inputs
                            .iter()
                            .map(|t| incept_compiler::to_runtime(t).map_err(|e| e.to_string()))
                            .collect::<Result<_, _>>()?;
                        let outs = model.run(&ins).map_err(|e| format!("run: {e}"))?;
                        for (k, (got, want)) in outs.iter().zip(&expected).enumerate() {
                            let got = incept_compiler::from_runtime(got).map_err(|e| e.to_string())?;
                            incept_tests::allclose(&got, want, 1e-4, 1e-5)
                                .map_err(|e| format!("output {k} ({cpu:?}): {e}"))?;
                        }
                    }
                }
                Ok(())
            })();
            match (result, listed(&jit_excl, &case)) {
                (Ok(()), false) => Outcome::Passed,
                (Ok(()), true) => Outcome::Stale(case),
                // An excluded case must be refused by the compiler, never run and come out wrong.
                (Err(e), true) if e.starts_with("compile") => Outcome::Excluded,
                (Err(e), true) => Outcome::Failed(format!("{case} (excluded, but it compiled and failed): {e}")),
                (Err(e), false) => Outcome::Failed(format!("{case}: {e}")),
            }
        })
        .collect();
    let (mut passed, mut excluded) = (0, 0);
    let mut failures = vec![];
    let mut stale = vec![];
    for o in outcomes {
        match o {
            Outcome::Skipped => {}
            Outcome::Passed => passed += 1,
            Outcome::Excluded => excluded += 1,
            Outcome::Stale(case) => stale.push(case),
            Outcome::Failed(f) => failures.push(f),
        }
    }
    let line = format!(
        "JIT conformance: {passed} cases pass, {excluded} excluded, {} unexpected failures, {} stale exclusions",
        failures.len(),
        stale.len()
    );
    incept_tests::report("jit_conformance", &line);
    assert!(failures.is_empty(), "{} JIT failures:\n{}", failures.len(), failures.join("\n"));
    assert!(stale.is_empty(), "JIT exclusions that now pass:\n{}", stale.join("\n"));
}

/// Gather with indices given at run time: matches the interpreter (negative indices too, any
/// axis, f32 and i64 data), and an index out of range fails the run with an error that names the
/// node instead of reading out of bounds.
#[test]
fn gather_checks_indices_at_run_time() {
    use incept_compiler::passes::Pipeline;
    let src = r#"graph g {
  input %x : f32[3,5,4]
  input %i : i64[2,3]
  %y = Gather(%x, %i) {axis=1} : f32[3,2,3,4] @"embed"
  output %y
}
"#;
    let g = incept_ir::text::parse(src).expect("parse");
    let x: Vec<f32> = (0..60).map(|v| v as f32 * 0.5 - 7.0).collect();
    let x = Tensor::from_vec(vec![3, 5, 4], x);
    for threads in [1, 2] {
        let opts = CompileOptions { pipeline: Pipeline::None, threads, ..Default::default() };
        let (model, _) = incept_compiler::compile_graph(g.clone(), &opts).expect("compile");
        let idx = Tensor::from_vec(vec![2, 3], vec![0i64, 4, -1, -5, 2, 3]);
        let want = incept_ir::interp::run(&g, &[x.clone(), idx.clone()]).expect("interpreter");
        let got = model.run(&[to_runtime(&x), to_runtime(&idx)]).expect("run");
        assert_eq!(from_runtime(&got[0]).to_f64s().expect("f32"), want[0].to_f64s().expect("f32"));
        for bad in [5i64, -6, i64::MAX, i64::MIN] {
            let idx = Tensor::from_vec(vec![2, 3], vec![0i64, 1, 2, bad, 0, 0]);
            let err = model.run(&[to_runtime(&x), to_runtime(&idx)]).expect_err("out of range");
            let msg = err.to_string();
            assert!(msg.contains("'embed' (Gather)") && msg.contains("outside [-5, 5)"), "{msg}");
            // The model keeps working after a failed run.
            let idx = Tensor::from_vec(vec![2, 3], vec![1i64, 1, 1, 1, 1, 1]);
            assert!(model.run(&[to_runtime(&x), to_runtime(&idx)]).is_ok());
        }
    }
}

/// Integer arithmetic follows the reference: wrapping, division truncating toward zero, x / 0 = 0,
/// and MIN / -1 wrapping instead of trapping; broadcasting works for every dtype.
#[test]
fn integer_arithmetic_matches_the_reference() {
    use incept_compiler::passes::Pipeline;
    for ty in ["i64", "i32", "u8", "f64"] {
        let src = format!(
            "graph g {{\n  input %a : {ty}[2,4]\n  input %b : {ty}[4]\n  %d = Div(%a, %b) : {ty}[2,4]\n  %m = Mul(%d, %a) : {ty}[2,4]\n  %s = Sub(%m, %b) : {ty}[2,4]\n  %x = Max(%s, %a, %b) : {ty}[2,4]\n  output %d, %x\n}}\n"
        );
        let g = incept_ir::text::parse(&src).expect("parse");
        let (a, b) = match ty {
            "i64" => (
                Tensor::from_vec(vec![2, 4], vec![i64::MIN, 7, -7, 5, i64::MAX, -1, 100, 0]),
                Tensor::from_vec(vec![4], vec![-1i64, 0, 2, -3]),
            ),
            "i32" => (
                Tensor::from_vec(vec![2, 4], vec![i32::MIN, 7, -7, 5, i32::MAX, -1, 100, 0]),
                Tensor::from_vec(vec![4], vec![-1i32, 0, 2, -3]),
            ),
            "u8" => (
                Tensor::from_vec(vec![2, 4], vec![255u8, 7, 9, 5, 200, 1, 100, 0]),
                Tensor::from_vec(vec![4], vec![3u8, 0, 2, 7]),
            ),
            _ => (
                Tensor::from_vec(vec![2, 4], vec![1.5f64, -7.25, f64::NAN, 5.0, 1e300, -1.0, 0.0, 3.0]),
                Tensor::from_vec(vec![4], vec![-1.0f64, 0.5, 2.0, -3.0]),
            ),
        };
        let want = incept_ir::interp::run(&g, &[a.clone(), b.clone()]).expect("interpreter");
        let opts = CompileOptions { pipeline: Pipeline::None, threads: 1, ..Default::default() };
        let (model, _) = incept_compiler::compile_graph(g, &opts).unwrap_or_else(|e| panic!("{ty}: {e}"));
        let rt = |t: &Tensor| incept_compiler::to_runtime(t).expect("tensor");
        let got = model.run(&[rt(&a), rt(&b)]).expect("run");
        for (k, (got, want)) in got.iter().zip(&want).enumerate() {
            let got = incept_compiler::from_runtime(got).expect("tensor");
            assert_eq!(got.bytes(), want.bytes(), "{ty} output {k}: {got:?} vs {want:?}");
        }
    }
}

/// `run` checks its inputs (count, names, dtypes, shapes) and says what it expected; a failed
/// call leaves the model usable.
#[test]
fn run_rejects_wrong_inputs_with_typed_errors() {
    use incept_runtime::{DType, RunError, Tensor as RTensor};
    let dir = fixtures_dir();
    let mut import = ImportOptions::default();
    import.input_shapes.insert("input".into(), vec![1, 3, 64, 64]);
    let opts = CompileOptions { import, threads: 1, ..Default::default() };
    let model = incept_compiler::compile(dir.join("mini_resnet.onnx").as_path(), &opts).expect("compile");
    let good = RTensor::zeros(DType::F32, &[1, 3, 64, 64]);
    let err = model.run(&[]).expect_err("no inputs");
    assert!(matches!(err, RunError::InputCount { expected: 1, got: 0, .. }), "{err}");
    assert!(err.to_string().contains("takes 1 input(s) (input), 0 given"), "{err}");
    let err = model.run(&[RTensor::zeros(DType::F32, &[1, 3, 64, 63])]).expect_err("shape");
    assert_eq!(err.to_string(), "input 'input': expected f32[1,3,64,64], got f32[1,3,64,63]");
    let err = model.run(&[RTensor::zeros(DType::I64, &[1, 3, 64, 64])]).expect_err("dtype");
    assert_eq!(err.to_string(), "input 'input': expected f32[1,3,64,64], got i64[1,3,64,64]");
    let err = model.run_named(&[("image", &good)]).expect_err("name");
    assert!(matches!(err, RunError::UnknownInput { .. }) && err.to_string().contains("(inputs: input)"), "{err}");
    assert!(model.run(std::slice::from_ref(&good)).is_ok() && model.run_named(&[("input", &good)]).is_ok());
}

/// `run(&self)` from several threads at once (each call takes its own arena) gives every caller
/// the same bits as a lone call.
#[test]
fn concurrent_runs_give_the_same_bits() {
    let dir = fixtures_dir();
    for threads in [1, 2] {
        let name = "mini_inception";
        let input = npy::read(&dir.join(format!("{name}.input.npy"))).expect("input");
        let mut import = ImportOptions::default();
        import.input_shapes.insert("input".into(), input.shape().to_vec());
        let opts = CompileOptions { import, threads, ..Default::default() };
        let model = incept_compiler::compile(dir.join(format!("{name}.onnx")).as_path(), &opts).expect("compile");
        // Distinct inputs per caller so that a shared arena would mix them up.
        let inputs: Vec<Tensor> = (0..4)
            .map(|k| {
                let v: Vec<f32> =
                    input.view::<f32>().expect("f32").iter().map(|x| x * (1.0 + k as f32 * 0.25)).collect();
                Tensor::from_vec(input.shape().to_vec(), v)
            })
            .collect();
        let alone: Vec<Vec<u8>> = inputs
            .iter()
            .map(|t| from_runtime(&model.run(&[to_runtime(t)]).expect("run")[0]).bytes().to_vec())
            .collect();
        std::thread::scope(|s| {
            for (t, want) in inputs.iter().zip(&alone) {
                let model = &model;
                s.spawn(move || {
                    for _ in 0..20 {
                        let got = model.run(&[to_runtime(t)]).expect("run");
                        assert_eq!(from_runtime(&got[0]).bytes().as_ref(), want.as_slice());
                    }
                });
            }
        });
    }
}

/// Max pools choose as the reference does, NaNs included: the first element of the window, then
/// any strictly greater one (so a NaN first element wins and a later NaN is skipped), on the
/// vector (interior) and scalar (border) paths and in 3-D.
#[test]
fn max_pool_nans_follow_the_reference() {
    use incept_compiler::passes::Pipeline;
    let cases = [
        ("f32[1,2,6,11]", "kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]", "f32[1,2,6,11]"),
        ("f32[1,2,7,9]", "kernel_shape=[2, 3], strides=[2, 1], pads=[0, 1, 1, 0]", "f32[1,2,4,8]"),
        ("f32[1,2,5,29]", "kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]", "f32[1,2,3,15]"),
        ("f32[1,2,5,30]", "kernel_shape=[3, 2], strides=[2, 2], dilations=[1, 3]", "f32[1,2,2,14]"),
        ("f32[1,1,4,5,6]", "kernel_shape=[2, 2, 3], strides=[1, 1, 1], pads=[0, 1, 0, 1, 0, 1]", "f32[1,1,4,5,5]"),
    ];
    for (xt, attrs, yt) in cases {
        let src = format!("graph g {{\n  input %x : {xt}\n  %y = MaxPool(%x) {{{attrs}}} : {yt}\n  output %y\n}}\n");
        let g = incept_ir::text::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
        let dims = g.ty(g.input_values()[0]).static_dims().expect("static");
        let n: usize = dims.iter().product();
        let v: Vec<f32> =
            (0..n).map(|i| if i % 7 == 3 || i % 11 == 0 { f32::NAN } else { ((i * 37) % 23) as f32 - 11.0 }).collect();
        let x = Tensor::from_vec(dims, v);
        let want = incept_ir::interp::run(&g, std::slice::from_ref(&x)).expect("interpreter");
        let opts = CompileOptions { pipeline: Pipeline::None, threads: 1, ..Default::default() };
        let (model, _) = incept_compiler::compile_graph(g, &opts).expect("compile");
        let got = from_runtime(&model.run(&[to_runtime(&x)]).expect("run")[0]);
        let (a, b) = (got.to_f64s().expect("f32"), want[0].to_f64s().expect("f32"));
        for (k, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!(p == q || p.is_nan() && q.is_nan(), "{xt} {attrs}: element {k}: JIT {p}, reference {q}");
        }
        assert!(b.iter().any(|v| v.is_nan()) && b.iter().any(|v| !v.is_nan()), "the case exercises both");
    }
}

/// Runs a text graph through the interpreter and through the JIT (no passes, and all passes, so
/// fused forms are covered too) and returns (interpreter, [JIT without passes, JIT with passes]).
fn interp_and_jit(src: &str, inputs: &[Tensor]) -> (Vec<Tensor>, Vec<Vec<Tensor>>) {
    use incept_compiler::passes::Pipeline;
    let g = incept_ir::text::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let want = incept_ir::interp::run(&g, inputs).expect("interpreter");
    let rt: Vec<_> = inputs.iter().map(|t| incept_compiler::to_runtime(t).expect("input")).collect();
    let mut got = vec![];
    for pipeline in [Pipeline::None, Pipeline::Full] {
        let opts = CompileOptions { pipeline, threads: 1, ..Default::default() };
        let (model, _) = incept_compiler::compile_graph(g.clone(), &opts).unwrap_or_else(|e| panic!("{e}\n{src}"));
        let outs = model.run(&rt).expect("run");
        got.push(outs.iter().map(|t| incept_compiler::from_runtime(t).expect("output")).collect());
    }
    (want, got)
}

/// Equal values, NaN equal to NaN; with `signs`, equal zeros must also have the same sign.
fn same_values(a: &[f64], b: &[f64], signs: bool) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (x.is_nan() && y.is_nan()) || (x == y && (!signs || x.is_sign_negative() == y.is_sign_negative()))
        })
}

/// The interpreter's NaN rules against values measured with onnxruntime 1.32 (CPU provider):
/// Max and Min return NaN when any input is NaN, in any position, with 2 or 3 inputs and with
/// broadcasting. MaxPool keeps the first element of the window, then any strictly greater one (a
/// NaN wins only in first position): that is ORT's generic MaxPool, which it runs when the Indices
/// output is requested or dilations are set. ORT's MLAS MaxPool (plain 2-D/3-D windows) keeps or
/// drops a NaN depending on the SIMD lane it lands in (a 3x3 window on a 3x3 input with one NaN
/// and one 5 among zeros gave 0, 5 or NaN by position), so it has no rule to follow; its
/// GlobalMaxPool likewise (NaN first: the max of the rest; NaN at index 3 of 5: NaN). ReduceMax
/// and GlobalMaxPool follow MaxPool's rule here; ORT's ReduceMax agrees wherever the largest value
/// comes first (measured below), and its GlobalMaxPool wherever the NaN is not first. Zero signs
/// are not compared: ORT's Max(0, -0) gives +0 on its scalar path and -0 on its vector path (we
/// follow IEEE 754 maximum: +0).
#[test]
fn nan_rules_match_onnx_runtime() {
    let nan = f64::NAN;
    let f = |shape: &[usize], v: &[f64]| Tensor::from_vec(shape.to_vec(), v.iter().map(|&x| x as f32).collect());
    let run = |src: &str, inputs: &[Tensor]| -> Vec<Vec<f64>> {
        let g = incept_ir::text::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
        let outs = incept_ir::interp::run(&g, inputs).expect("interpreter");
        outs.iter().map(|t| t.to_f64s().expect("numeric")).collect()
    };
    let check = |what: &str, got: &[f64], want: &[f64]| {
        assert!(same_values(got, want, false), "{what}: interpreter {got:?}, ONNX Runtime {want:?}");
    };
    let a = f(&[7], &[nan, 1.0, nan, 2.0, -1.0, 0.0, nan]);
    let b = f(&[7], &[1.0, nan, nan, 3.0, nan, -0.0, 5.0]);
    let c = f(&[7], &[2.0, 2.0, 2.0, nan, 7.0, 1.0, -3.0]);
    let (a23, b21) = (f(&[2, 3], &[nan, 1.0, 2.0, 3.0, nan, 5.0]), f(&[2, 1], &[0.0, nan]));
    for (op, two, three, bcast) in [
        (
            "Max",
            [nan, nan, nan, 3.0, nan, 0.0, nan],
            [nan, nan, nan, nan, nan, 1.0, nan],
            [nan, 1.0, 2.0, nan, nan, nan],
        ),
        (
            "Min",
            [nan, nan, nan, 2.0, nan, 0.0, nan],
            [nan, nan, nan, nan, nan, 0.0, nan],
            [nan, 0.0, 0.0, nan, nan, nan],
        ),
    ] {
        let src = format!(
            "graph g {{\n  input %a : f32[7]\n  input %b : f32[7]\n  input %c : f32[7]\n  %y = {op}(%a, %b) : f32[7]\n  %z = {op}(%a, %b, %c) : f32[7]\n  output %y, %z\n}}\n"
        );
        let outs = run(&src, &[a.clone(), b.clone(), c.clone()]);
        check(&format!("{op} of 2"), &outs[0], &two);
        check(&format!("{op} of 3"), &outs[1], &three);
        let src = format!(
            "graph g {{\n  input %a : f32[2,3]\n  input %b : f32[2,1]\n  %y = {op}(%a, %b) : f32[2,3]\n  output %y\n}}\n"
        );
        check(&format!("{op} broadcast"), &run(&src, &[a23.clone(), b21.clone()])[0], &bcast);
    }
    // MaxPool, ORT's generic kernel: 2x2 windows with the Indices output, and dilated windows.
    let x = f(&[1, 1, 4, 5], &[3., nan, 1., 4., nan, 2., 5., nan, 0., 6., nan, 1., 2., 3., 1., 7., nan, 8., nan, 2.]);
    let src = "graph g {\n  input %x : f32[1,1,4,5]\n  %y, %i = MaxPool(%x) {kernel_shape=[2, 2]} : f32[1,1,3,4], i64[1,1,3,4]\n  output %y, %i\n}\n";
    let outs = run(src, std::slice::from_ref(&x));
    check("MaxPool 2x2", &outs[0], &[5., nan, 4., 6., 5., 5., nan, 6., nan, 8., 8., 3.]);
    check("MaxPool 2x2 indices", &outs[1], &[6., 1., 3., 9., 6., 6., 7., 9., 10., 17., 17., 13.]);
    let x = f(
        &[1, 1, 5, 5],
        &[nan, 1., 2., 3., 4., 5., nan, 7., 1., 0., 2., 9., nan, 1., 3., 4., 2., 6., nan, 5., 1., 8., 3., 2., nan],
    );
    let src = "graph g {\n  input %x : f32[1,1,5,5]\n  %y = MaxPool(%x) {kernel_shape=[2, 2], dilations=[2, 2]} : f32[1,1,3,3]\n  %z = MaxPool(%x) {kernel_shape=[3, 3], dilations=[2, 2], pads=[1, 1, 1, 1]} : f32[1,1,3,3]\n  output %y, %z\n}\n";
    let outs = run(src, std::slice::from_ref(&x));
    check("MaxPool dilated", &outs[0], &[nan, 9., 4., 7., nan, 7., 3., 9., nan]);
    check("MaxPool dilated, padded", &outs[1], &[nan, 7., nan, 9., nan, 9., nan, 7., nan]);
    // ReduceMax: NaN first gives NaN, NaN later is skipped.
    let x = f(&[3, 4], &[nan, 3., 2., 1., 4., nan, 2., 1., 4., 3., 2., nan]);
    let src = "graph g {\n  input %x : f32[3,4]\n  %a = const i64[1] [1]\n  %y = ReduceMax(%x, %a) {keepdims=0} : f32[3]\n  output %y\n}\n";
    check("ReduceMax rows", &run(src, std::slice::from_ref(&x))[0], &[nan, 4., 4.]);
    let x = f(&[2, 3], &[nan, 3., 2., 1., nan, 5.]);
    let src = "graph g {\n  input %x : f32[2,3]\n  %a = const i64[1] [0]\n  %y = ReduceMax(%x, %a) {keepdims=0} : f32[3]\n  output %y\n}\n";
    check("ReduceMax columns", &run(src, std::slice::from_ref(&x))[0], &[nan, 3., 5.]);
    // GlobalMaxPool with the NaN after the first element.
    for (v, want) in [(vec![2., nan], 2.), (vec![3., nan, 1.], 3.), (vec![3., 2., nan], 3.)] {
        let n = v.len();
        let src =
            format!("graph g {{\n  input %x : f32[1,1,{n}]\n  %y = GlobalMaxPool(%x) : f32[1,1,1]\n  output %y\n}}\n");
        check(&format!("GlobalMaxPool {v:?}"), &run(&src, &[f(&[1, 1, n], &v)])[0], &[want]);
    }
    // Relu(NaN) is NaN.
    let src = "graph g {\n  input %x : f32[3]\n  %y = Relu(%x) : f32[3]\n  output %y\n}\n";
    check("Relu", &run(src, &[f(&[3], &[nan, -1., 2.])])[0], &[nan, 0., 2.]);
}

/// Every JIT path that takes a max or a min follows the interpreter's rules bit for bit (NaNs and
/// the signs of zeros): elementwise Max/Min (vector body and scalar tail, broadcasting, 2 and 3
/// inputs, fused into Elementwise chains), Relu, Clip, MaxPool with Indices and dilated,
/// GlobalMaxPool, ReduceMax over one run of axes and over several, and over empty planes (-inf).
/// (`max_pool_nans_follow_the_reference` covers the plain pools' vector, scalar and 3-D paths.)
#[test]
fn nan_rules_are_the_same_in_the_jit() {
    let pattern = |n: usize, salt: usize| -> Vec<f32> {
        (0..n)
            .map(|i| match (i * 7 + salt * 3) % 11 {
                0 | 5 => f32::NAN,
                1 => 0.0,
                2 => -0.0,
                k => (k as f32 - 6.0) * 0.5,
            })
            .collect()
    };
    let t = |shape: &[usize], salt: usize| Tensor::from_vec(shape.to_vec(), pattern(shape.iter().product(), salt));
    let cases: Vec<(String, Vec<Tensor>)> = vec![
        (
            "graph g {\n  input %a : f32[3,13]\n  input %b : f32[3,13]\n  input %c : f32[13]\n  %m = Max(%a, %b) : f32[3,13]\n  %n = Min(%a, %b, %c) : f32[3,13]\n  %s = Add(%m, %n) : f32[3,13]\n  %r = Relu(%s) : f32[3,13]\n  %x = Max(%r, %c) : f32[3,13]\n  output %m, %n, %r, %x\n}\n".into(),
            vec![t(&[3, 13], 1), t(&[3, 13], 2), t(&[13], 3)],
        ),
        (
            "graph g {\n  input %x : f32[1,2,5,6]\n  %y, %i = MaxPool(%x) {kernel_shape=[2, 3], pads=[1, 0, 0, 1]} : f32[1,2,5,5], i64[1,2,5,5]\n  %z = MaxPool(%x) {kernel_shape=[3, 2], dilations=[2, 1]} : f32[1,2,1,5]\n  output %y, %i, %z\n}\n".into(),
            vec![t(&[1, 2, 5, 6], 5)],
        ),
        (
            "graph g {\n  input %e : f32[1,2,0,3]\n  %m = GlobalMaxPool(%e) : f32[1,2,1,1]\n  %ax = const i64[1] [2]\n  %r = ReduceMax(%e, %ax) {keepdims=0} : f32[1,2,3]\n  %n = Neg(%m) : f32[1,2,1,1]\n  %x = Max(%n, %m) : f32[1,2,1,1]\n  %nan = const f32[1] [nan]\n  %y = Max(%x, %nan) : f32[1,2,1,1]\n  output %m, %r, %y\n}\n".into(),
            vec![Tensor::from_vec(vec![1, 2, 0, 3], Vec::<f32>::new())],
        ),
        (
            "graph g {\n  input %a : f32[2,5,6]\n  %lo = const f32[] 0.0\n  %hi = const f32[] 1.0\n  %c = Clip(%a, %lo, %hi) : f32[2,5,6]\n  %g = GlobalMaxPool(%a) : f32[2,5,1]\n  %ax = const i64[1] [2]\n  %r1 = ReduceMax(%a, %ax) {keepdims=0} : f32[2,5]\n  %ay = const i64[2] [0, 2]\n  %r2 = ReduceMax(%a, %ay) {keepdims=1} : f32[1,5,1]\n  %az = const i64[2] [0, 1]\n  %r3 = ReduceMax(%a, %az) {keepdims=0} : f32[6]\n  output %c, %g, %r1, %r2, %r3\n}\n".into(),
            vec![t(&[2, 5, 6], 4)],
        ),
    ];
    for (src, inputs) in cases {
        let (want, got) = interp_and_jit(&src, &inputs);
        for (p, outs) in got.iter().enumerate() {
            for (k, (g, w)) in outs.iter().zip(&want).enumerate() {
                let (a, b) = (g.to_f64s().expect("f32"), w.to_f64s().expect("f32"));
                assert!(same_values(&a, &b, true), "pipeline {p}, output {k}: JIT {a:?}\nreference {b:?}\n{src}");
            }
        }
        let all: Vec<f64> = want.iter().flat_map(|w| w.to_f64s().expect("f32")).collect();
        assert!(all.iter().any(|v| v.is_nan()) && all.iter().any(|v| !v.is_nan()), "the case exercises both");
    }
}

/// Special values as a tensor of `dtype` (converted with Rust's `as`, i.e. saturating for floats
/// into integers and wrapping for integers).
fn specials(dtype: incept_ir::DType) -> Tensor {
    use incept_ir::DType::*;
    let floats = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        0.0,
        -0.0,
        0.5,
        -0.5,
        0.99,
        -0.99,
        2.5,
        -2.5,
        127.9,
        128.0,
        -128.9,
        -129.0,
        255.5,
        256.0,
        -1.0,
        32767.5,
        -32769.0,
        65535.9,
        65536.0,
        2147483647.5,
        -2147483649.0,
        4294967295.5,
        4294967296.0,
        -3e9,
        9.3e18,
        1.85e19,
        -9.3e18,
        1e30,
        -1e30,
        1e-40,
        3.4e38,
        1e300,
    ];
    let ints: [i128; 18] = [
        0,
        1,
        -1,
        127,
        128,
        -129,
        255,
        256,
        65535,
        -32769,
        i32::MAX as i128,
        i32::MIN as i128,
        u32::MAX as i128,
        (1 << 53) + 1,
        (1 << 24) + 1,
        i64::MAX as i128,
        i64::MIN as i128,
        u64::MAX as i128,
    ];
    macro_rules! v {
        ($src:expr, $t:ty) => {
            Tensor::from_vec(vec![$src.len()], $src.iter().map(|&x| x as $t).collect::<Vec<$t>>())
        };
    }
    match dtype {
        F32 => v!(floats, f32),
        F64 => v!(floats, f64),
        I8 => v!(ints, i8),
        U8 => v!(ints, u8),
        I16 => v!(ints, i16),
        U16 => v!(ints, u16),
        I32 => v!(ints, i32),
        U32 => v!(ints, u32),
        I64 => v!(ints, i64),
        U64 => v!(ints, u64),
        Bool => Tensor::from_bools(vec![4], vec![true, false, false, true]),
        F16 => unreachable!("not a test dtype"),
    }
}

/// Cast between every pair of numeric and bool dtypes gives the reference's bits: floats into
/// integers truncate toward zero and saturate (NaN gives 0, -inf and negatives give 0 for
/// unsigned targets), integers wrap, integers into floats round to nearest, anything into bool is
/// `x != 0` (NaN is true).
#[test]
fn casts_match_the_reference() {
    use incept_compiler::passes::Pipeline;
    use incept_ir::DType::*;
    let all = [F32, F64, I8, U8, I16, U16, I32, U32, I64, U64, Bool];
    for from in all {
        let x = specials(from);
        let n = x.shape()[0];
        for to in all {
            let src = format!(
                "graph g {{\n  input %x : {}[{n}]\n  %y = Cast(%x) {{to={}}} : {}[{n}]\n  output %y\n}}\n",
                from.name(),
                to as i64,
                to.name()
            );
            let g = incept_ir::text::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
            let want = incept_ir::interp::run(&g, std::slice::from_ref(&x)).expect("interpreter");
            let opts = CompileOptions { pipeline: Pipeline::None, threads: 1, ..Default::default() };
            let (model, _) = incept_compiler::compile_graph(g, &opts).unwrap_or_else(|e| panic!("{from}->{to}: {e}"));
            let got = model.run(&[incept_compiler::to_runtime(&x).expect("input")]).expect("run");
            let got = incept_compiler::from_runtime(&got[0]).expect("output");
            assert_eq!(got.bytes(), want[0].bytes(), "{from} -> {to}: {x:?}\nJIT {got:?}\nreference {:?}", want[0]);
        }
    }
    // The rules themselves, on the interpreter.
    let cast = |x: Tensor, to: incept_ir::DType| -> Vec<f64> {
        let op = incept_ir::Op::Cast(incept_ir::ops::Cast { to });
        op.eval(&[Some(&x)]).expect("cast")[0].to_f64s().expect("numeric")
    };
    let f = Tensor::from_vec(vec![6], vec![f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -2.7, 300.0, 2.7]);
    assert_eq!(cast(f.clone(), U8), [0.0, 255.0, 0.0, 0.0, 255.0, 2.0]);
    assert_eq!(cast(f.clone(), I8), [0.0, 127.0, -128.0, -2.0, 127.0, 2.0]);
    assert_eq!(cast(f.clone(), U64), [0.0, u64::MAX as f64, 0.0, 0.0, 300.0, 2.0]);
    assert_eq!(cast(f, Bool), [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]);
    assert_eq!(cast(Tensor::from_vec(vec![2], vec![-1i64, 300]), U8), [255.0, 44.0]);
}

/// Pow with integer and mixed operands (every dtype pair the ONNX tests use, and more) gives the
/// reference's bits: computed in f64, converted back to the base's dtype like Cast (so negative
/// exponents of integers truncate toward zero, overflow saturates, NaN gives 0); broadcasting.
#[test]
fn integer_pow_matches_the_reference() {
    use incept_compiler::passes::Pipeline;
    use incept_ir::DType::*;
    let base = |d: incept_ir::DType| -> Tensor {
        let v: [i64; 8] = [2, -3, 0, 5, 7, -1, 10, 3];
        let f = [2.0, -3.0, 0.0, 5.5, 7.0, -1.0, 10.0, 0.25];
        match d {
            F32 => Tensor::from_vec(vec![2, 4], f.iter().map(|&x| x as f32).collect()),
            F64 => Tensor::from_vec(vec![2, 4], f.to_vec()),
            I32 => Tensor::from_vec(vec![2, 4], v.iter().map(|&x| x as i32).collect()),
            I64 => Tensor::from_vec(vec![2, 4], v.to_vec()),
            U8 => Tensor::from_vec(vec![2, 4], v.iter().map(|&x| x as u8).collect()),
            U32 => Tensor::from_vec(vec![2, 4], v.iter().map(|&x| x as u32).collect()),
            U64 => Tensor::from_vec(vec![2, 4], v.iter().map(|&x| x as u64).collect()),
            _ => unreachable!(),
        }
    };
    let exps = |d: incept_ir::DType| -> Tensor {
        let v: [i64; 4] = [3, -1, 0, 40];
        let f = [3.0, -1.0, 0.5, 40.0];
        match d {
            F32 => Tensor::from_vec(vec![4], f.iter().map(|&x| x as f32).collect()),
            F64 => Tensor::from_vec(vec![4], f.to_vec()),
            I32 => Tensor::from_vec(vec![4], v.iter().map(|&x| x as i32).collect()),
            I64 => Tensor::from_vec(vec![4], v.to_vec()),
            U8 => Tensor::from_vec(vec![4], v.iter().map(|&x| x as u8).collect()),
            U32 => Tensor::from_vec(vec![4], v.iter().map(|&x| x as u32).collect()),
            U64 => Tensor::from_vec(vec![4], v.iter().map(|&x| x as u64).collect()),
            _ => unreachable!(),
        }
    };
    let types = [F32, F64, I32, I64, U8, U32, U64];
    for b in types {
        for e in types {
            let src = format!(
                "graph g {{\n  input %a : {b}[2,4]\n  input %e : {e}[4]\n  %y = Pow(%a, %e) : {b}[2,4]\n  output %y\n}}\n",
                b = b.name(),
                e = e.name()
            );
            let (a, x) = (base(b), exps(e));
            for pipeline in [Pipeline::None, Pipeline::Full] {
                let g = incept_ir::text::parse(&src).unwrap_or_else(|err| panic!("{err}\n{src}"));
                let want = incept_ir::interp::run(&g, &[a.clone(), x.clone()]).expect("interpreter");
                let opts = CompileOptions { pipeline, threads: 1, ..Default::default() };
                let (model, _) =
                    incept_compiler::compile_graph(g, &opts).unwrap_or_else(|err| panic!("{b}^{e}: {err}"));
                let rt = |t: &Tensor| incept_compiler::to_runtime(t).expect("tensor");
                let got = model.run(&[rt(&a), rt(&x)]).expect("run");
                let got = incept_compiler::from_runtime(&got[0]).expect("output");
                assert_eq!(got.bytes(), want[0].bytes(), "{b}^{e}: JIT {got:?}\nreference {:?}", want[0]);
            }
        }
    }
}

/// ConstantOfShape compiles both ways it is used. As conv weights it is evaluated at compile
/// time and packed like any constant weights, whether const-folding folded it (small) or left
/// it (above the folding size limit) or did not run: no fill step, and a 3x3 conv with enough
/// channels takes Winograd, which needs constant weights. Read as an activation (an Add with an
/// input, a graph output, an i64 fill) it is written by a fill kernel.
#[test]
fn constant_of_shape_compiles() {
    use incept_compiler::passes::Pipeline;
    // 32*32*9 = 9216 weights fold; 128*64*9 = 73728 exceed const-folding's growth limit.
    for (c, m) in [(32, 32), (64, 128)] {
        let src = format!(
            "graph g {{\n  input %x : f32[1,{c},10,10]\n  %s = const i64[4] [{m}, {c}, 3, 3]\n  %w = ConstantOfShape(%s) {{value=const f32[1] [0.015625]}} : f32[{m},{c},3,3]\n  %y = Conv(%x, %w) {{kernel_shape=[3, 3], pads=[1, 1, 1, 1]}} : f32[1,{m},10,10]\n  %r = Relu(%y) : f32[1,{m},10,10]\n  output %r\n}}\n"
        );
        let g = incept_ir::text::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
        let n = c * 100;
        let x = Tensor::from_vec(vec![1, c, 10, 10], (0..n).map(|i| ((i * 13) % 17) as f32 - 8.0).collect());
        let want = incept_ir::interp::run(&g, std::slice::from_ref(&x)).expect("interpreter");
        for pipeline in [Pipeline::None, Pipeline::Full] {
            let opts = CompileOptions { pipeline: pipeline.clone(), threads: 1, ..Default::default() };
            let (model, _) = incept_compiler::compile_graph(g.clone(), &opts).unwrap_or_else(|e| panic!("{e}"));
            let ops: Vec<&str> = model.plan().steps.iter().map(|s| s.op.as_str()).collect();
            assert!(!ops.contains(&"ConstantOfShape"), "{c}x{m} {pipeline:?}: weights filled at run time: {ops:?}");
            assert!(ops.contains(&"WinogradInput"), "{c}x{m} {pipeline:?}: weights not constant: {ops:?}");
            let got = from_runtime(&model.run(&[to_runtime(&x)]).expect("run")[0]);
            let err = max_rel_err(&got, &want[0]).expect("same shape");
            assert!(err < 1e-5, "{c}x{m} {pipeline:?}: error {err}");
        }
    }
    let src = "graph g {\n  input %x : f32[2,3,5]\n  %s = const i64[3] [2, 3, 5]\n  %k = ConstantOfShape(%s) {value=const f32[1] [1.5]} : f32[2,3,5]\n  %y = Add(%x, %k) : f32[2,3,5]\n  %t = const i64[2] [4, 7]\n  %z = ConstantOfShape(%t) {value=const i64[1] [-3]} : i64[4,7]\n  output %y, %z, %k\n}\n";
    let g = incept_ir::text::parse(src).unwrap_or_else(|e| panic!("{e}\n{src}"));
    let x = Tensor::from_vec(vec![2, 3, 5], (0..30).map(|i| i as f32 * 0.25).collect());
    let want = incept_ir::interp::run(&g, std::slice::from_ref(&x)).expect("interpreter");
    let opts = CompileOptions { pipeline: Pipeline::None, threads: 1, ..Default::default() };
    let (model, _) = incept_compiler::compile_graph(g, &opts).expect("compile");
    let ops: Vec<&str> = model.plan().steps.iter().map(|s| s.op.as_str()).collect();
    assert_eq!(ops.iter().filter(|o| **o == "ConstantOfShape").count(), 2, "{ops:?}");
    let got = model.run(&[to_runtime(&x)]).expect("run");
    for (k, (got, want)) in got.iter().zip(&want).enumerate() {
        let got = incept_compiler::from_runtime(got).expect("output");
        assert!(got.same_content(want), "output {k}: {got:?} vs {want:?}");
    }
}

/// Resize's tf_crop_and_resize with the region of interest given at run time: the tap tables are
/// computed by a kernel on each run (a `ResizeTaps` step, no tables in the weights), and follow
/// the reference for rois that crop, extrapolate, hit rounding ties in nearest mode, or are NaN.
#[test]
fn resize_roi_at_run_time() {
    use incept_compiler::passes::Pipeline;
    for (mode, extra) in [
        ("linear", ""),
        ("nearest", ", nearest_mode=\"round_prefer_ceil\""),
        ("cubic", ", exclude_outside=1"),
        ("linear", ", antialias=1"),
    ] {
        let src = format!(
            "graph g {{\n  input %x : f32[1,2,5,6]\n  input %roi : f32[4]\n  %s = const f32[2] [0.6, 1.5]\n  %y = Resize(%x, %roi, %s) {{mode=\"{mode}\", coordinate_transformation_mode=\"tf_crop_and_resize\", extrapolation_value=-5.0, axes=[2, 3]{extra}}} : f32[1,2,3,9]\n  output %y\n}}\n"
        );
        let g = incept_ir::text::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
        let x = Tensor::from_vec(vec![1, 2, 5, 6], (0..60).map(|i| ((i * 7) % 11) as f32 - 3.0).collect());
        let opts = CompileOptions { pipeline: Pipeline::None, threads: 1, ..Default::default() };
        let (model, _) = incept_compiler::compile_graph(g.clone(), &opts).unwrap_or_else(|e| panic!("{e}"));
        let ops: Vec<&str> = model.plan().steps.iter().map(|s| s.op.as_str()).collect();
        assert_eq!(ops.iter().filter(|o| **o == "ResizeTaps").count(), 2, "{ops:?}");
        for roi in [
            [0.0f32, 0.0, 1.0, 1.0],
            [0.25, -0.2, 0.75, 1.2],
            [0.125, 0.1, 0.625, 0.5],
            [1.0, 0.9, 0.0, 0.1],
            [-1.0, -1.0, -0.5, -0.5],
            [f32::NAN, 0.0, 1.0, 1.0],
        ] {
            let roi = Tensor::from_vec(vec![4], roi.to_vec());
            let want = incept_ir::interp::run(&g, &[x.clone(), roi.clone()]).expect("interpreter");
            let got = from_runtime(&model.run(&[to_runtime(&x), to_runtime(&roi)]).expect("run")[0]);
            let (a, b) = (got.to_f64s().expect("f32"), want[0].to_f64s().expect("f32"));
            for (k, (p, q)) in a.iter().zip(&b).enumerate() {
                let close = (p - q).abs() <= 1e-5 * q.abs().max(1.0) || p.is_nan() && q.is_nan();
                assert!(close, "{mode}{extra}, roi {roi:?}: element {k}: JIT {p}, reference {q}");
            }
        }
    }
}

/// A plan that needs CPU features this machine lacks is refused at load, naming them; the same
/// model compiled for the baseline loads and gives the same result within rounding.
#[test]
fn plans_needing_missing_cpu_features_are_refused() {
    let dir = fixtures_dir();
    let opts = CompileOptions { threads: 1, ..Default::default() };
    let (model, _) = compile_with_report(dir.join("mini_resnet.onnx").as_path(), &opts).expect("compile");
    let mut plan = model.plan().clone();
    let missing = if incept_runtime::cpu::has_feature("avx512f") { "no-such-feature" } else { "avx512f" };
    plan.features.push(missing.into());
    // As the compiler would have sealed it for that CPU.
    plan.seal();
    let err = incept_runtime::Model::new(plan, &Default::default()).err().expect("refused");
    assert!(matches!(&err, incept_runtime::RunError::CpuFeatures { missing: m, .. } if m == missing), "{err}");
    assert!(err.to_string().contains(missing) && err.to_string().contains("--cpu baseline"), "{err}");
}

/// Winograd is declined where its transformed weights (16/9 of the 3x3 ones) would be read for
/// only a few tiles: a 3x3 conv with 4 MB of Winograd weights on a 7x7 map (16 tiles) runs as a
/// direct conv, the same conv on 14x14 (49 tiles) and a small one on 7x7 take Winograd.
#[test]
fn winograd_is_declined_for_big_weights_on_small_maps() {
    for (c, hw, wino) in [(128, 7, true), (160, 7, false), (160, 14, true)] {
        let src = format!(
            "graph g {{\n  input %x : f32[1,{c},{hw},{hw}]\n  %w = const f32[{c},{c},3,3] random(1)\n  %y = Conv(%x, %w) {{kernel_shape=[3, 3], pads=[1, 1, 1, 1]}} : f32[1,{c},{hw},{hw}]\n  output %y\n}}\n"
        );
        let g = incept_ir::text::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
        let opts = CompileOptions { threads: 1, ..Default::default() };
        let (model, _) = incept_compiler::compile_graph(g, &opts).unwrap_or_else(|e| panic!("{e}"));
        let ops: Vec<&str> = model.plan().steps.iter().map(|s| s.op.as_str()).collect();
        assert_eq!(ops.contains(&"WinogradInput"), wino, "{c} channels on {hw}x{hw}: {ops:?}");
    }
}

/// F(2x2, 3x3) reads a zero-padded copy of its input where border tiles are over a quarter of
/// the map (14x14: 24 of 49), and checks borders itself on big maps (40x40: 39 of 400), so the
/// Winograd tests reach both input paths; its results match the interpreter either way.
#[test]
fn winograd2_pads_maps_with_many_border_tiles() {
    for (hw, padded) in [(14, true), (40, false)] {
        let src = format!(
            "graph g {{\n  input %x : f32[1,16,{hw},{hw}]\n  %w = const f32[16,16,3,3] random(1)\n  %y = Conv(%x, %w) {{kernel_shape=[3, 3], pads=[1, 1, 1, 1]}} : f32[1,16,{hw},{hw}]\n  output %y\n}}\n"
        );
        let g = incept_ir::text::parse(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
        let opts = CompileOptions { threads: 1, winograd_tile: Some(2), ..Default::default() };
        let (model, _) = incept_compiler::compile_graph(g.clone(), &opts).unwrap_or_else(|e| panic!("{e}"));
        let ops: Vec<&str> = model.plan().steps.iter().map(|s| s.op.as_str()).collect();
        assert!(ops.contains(&"WinogradInput"), "{hw}x{hw}: {ops:?}");
        assert_eq!(ops.contains(&"WinogradPad"), padded, "{hw}x{hw}: {ops:?}");
        let mut rng = incept_ir::text::parse::SplitMix(3);
        let x = Tensor::from_vec(vec![1, 16, hw, hw], (0..16 * hw * hw).map(|_| rng.uniform() as f32).collect());
        let want = incept_ir::interp::run(&g, std::slice::from_ref(&x)).expect("interpreter");
        model.fill_arena_for_testing(0xFF);
        let got = model.run(&[to_runtime(&x)]).expect("run");
        let err = max_rel_err(&from_runtime(&got[0]), &want[0]).expect("same shape");
        assert!(err < 1e-5, "{hw}x{hw}: error {err:e}");
    }
}

/// F(4x4, 3x3) only when asked for: a 64-channel 3x3 conv on 56x56 (where the cost model
/// prefers it) runs F(2x2, 3x3) by default and F(4x4, 3x3) with `winograd_f4`, both within
/// rounding of the reference.
#[test]
fn winograd_f4_is_opt_in() {
    use incept_ir::attrs::AttrValue;
    let mut r = incept_tests::graphs::Gen::new(7);
    let xin = r.input(&[1, 64, 56, 56]);
    let w = r.weights(&[64, 64, 3, 3]);
    let pads = AttrValue::Ints(vec![1, 1, 1, 1]);
    let y = r.op("Conv", vec![("pads", pads)], vec![Some(xin), Some(w)]).expect("conv");
    r.g.set_outputs(vec![y]);
    let x = r.random(&[1, 64, 56, 56]);
    let g = r.g;
    let want = incept_ir::interp::run(&g, std::slice::from_ref(&x)).expect("interpreter");
    for f4 in [false, true] {
        let opts = CompileOptions { threads: 1, winograd_f4: f4, ..Default::default() };
        let (model, _) = incept_compiler::compile_graph(g.clone(), &opts).expect("compile");
        let kernels: Vec<&str> = model.plan().kernels.iter().map(|k| k.name.as_str()).collect();
        let has4 = kernels.iter().any(|k| k.starts_with("winograd4"));
        let has_winograd = kernels.iter().any(|k| k.contains("winograd"));
        assert!(has_winograd && has4 == f4, "winograd_f4 {f4}: kernels {kernels:?}");
        let got = model.run(&[incept_compiler::to_runtime(&x).expect("input")]).expect("run");
        let got = incept_compiler::from_runtime(&got[0]).expect("output");
        assert!(incept_tests::graphs::rel_err(&got, &want[0]) < 1e-5, "winograd_f4 {f4}");
    }
}
