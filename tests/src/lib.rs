//! Helpers shared by the workspace-level integration tests.

use std::path::{Path, PathBuf};

use incept_ir::Tensor;

pub mod exercise;
pub mod graphs;
pub mod modgraph;
pub mod mutate;
pub mod pairwise;
pub mod tables;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// Prints a suite's summary line and keeps it in `target/<profile>/test-reports/<name>.txt`, so
/// that CI can show the counts of a passing run (whose output the test harness swallows) without
/// running the suite again.
pub fn report(name: &str, line: &str) {
    println!("{line}");
    // The test executable is target/<profile>/deps/<binary>.
    let dir = std::env::current_exe().ok().and_then(|exe| Some(exe.parent()?.parent()?.join("test-reports")));
    if let Some(dir) = dir
        && std::fs::create_dir_all(&dir).is_ok()
    {
        let _ = std::fs::write(dir.join(format!("{name}.txt")), format!("{line}\n"));
    }
}

/// `tests/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

/// The folder of the full-size zoo models (`bench/zoo/make_zoo.py --out DIR`), from
/// `INCEPT_ZOO_DIR`. The zoo tests are `#[ignore]`d, so this runs only when someone asked for
/// them with `--ignored`: then a missing folder fails loudly rather than passing without a run.
pub fn zoo_dir() -> PathBuf {
    match std::env::var_os("INCEPT_ZOO_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_dir() => dir,
        Some(dir) => panic!("INCEPT_ZOO_DIR={} is not a folder", dir.display()),
        None => panic!(
            "set INCEPT_ZOO_DIR to the output folder of bench/zoo/make_zoo.py: \
             INCEPT_ZOO_DIR=DIR cargo test --release -p incept-tests --test zoo --test optimized -- --ignored"
        ),
    }
}

/// The real-exporter fixture models (each has NAME.onnx, NAME.input.npy, NAME.ort_output.npy).
pub const FIXTURES: [&str; 8] = [
    "mini_resnet",
    "mini_inception",
    "mini_xception",
    "mini_mobilenetv2",
    "torch_resnet_mini",
    "torch_inception_mini",
    "torch_separable_mini",
    "mini_inception_resnet",
];

/// Largest |got - want| divided by the largest |want| (the relative error the tests bound).
pub fn max_rel_err(got: &Tensor, want: &Tensor) -> Result<f64, String> {
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} differs from expected {:?}", got.shape(), want.shape()));
    }
    let g = got.to_f64s().map_err(|e| e.to_string())?;
    let w = want.to_f64s().map_err(|e| e.to_string())?;
    let scale = w.iter().fold(0f64, |m, v| m.max(v.abs())).max(f64::MIN_POSITIVE);
    let mut worst = 0f64;
    for (a, b) in g.iter().zip(&w) {
        if a.is_nan() != b.is_nan() {
            return Ok(f64::INFINITY);
        }
        if !a.is_nan() {
            worst = worst.max((a - b).abs());
        }
    }
    Ok(worst / scale)
}

/// numpy-style `allclose`: `|got - want| <= atol + rtol * |want|` elementwise, with matching
/// dtypes and shapes; NaN matches NaN and infinities must match exactly.
pub fn allclose(got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Result<(), String> {
    if got.dtype() != want.dtype() {
        return Err(format!("dtype {} differs from expected {}", got.dtype(), want.dtype()));
    }
    if got.shape() != want.shape() {
        return Err(format!("shape {:?} differs from expected {:?}", got.shape(), want.shape()));
    }
    let g = got.to_f64s().map_err(|e| e.to_string())?;
    let w = want.to_f64s().map_err(|e| e.to_string())?;
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let ok = if a.is_nan() || b.is_nan() {
            a.is_nan() && b.is_nan()
        } else if a.is_infinite() || b.is_infinite() {
            a == b
        } else {
            (a - b).abs() <= atol + rtol * b.abs()
        };
        if !ok {
            return Err(format!("element {i}: got {a}, expected {b}"));
        }
    }
    Ok(())
}

/// Small builders for hand-made ONNX models in tests.
pub mod build {
    use incept_ir::onnx::proto::*;

    pub fn tensor_type(elem: i32, dims: &[i64]) -> TypeProto {
        TypeProto {
            value: Some(TypeValue::TensorType(TypeTensor {
                elem_type: elem,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension { value: Some(DimensionValue::DimValue(d)), denotation: String::new() })
                        .collect(),
                }),
            })),
            denotation: String::new(),
        }
    }

    pub fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
        ValueInfoProto { name: name.into(), r#type: Some(tensor_type(1, dims)), doc_string: String::new() }
    }

    pub fn f32_tensor(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            float_data: data.to_vec(),
            ..Default::default()
        }
    }

    pub fn i64_tensor(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 7,
            int64_data: data.to_vec(),
            ..Default::default()
        }
    }

    pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto { name: name.into(), r#type: attribute_type::INTS, ints: v.to_vec(), ..Default::default() }
    }

    pub fn int_attr(name: &str, v: i64) -> AttributeProto {
        AttributeProto { name: name.into(), r#type: attribute_type::INT, i: v, ..Default::default() }
    }

    pub fn float_attr(name: &str, v: f32) -> AttributeProto {
        AttributeProto { name: name.into(), r#type: attribute_type::FLOAT, f: v, ..Default::default() }
    }

    pub fn floats_attr(name: &str, v: &[f32]) -> AttributeProto {
        AttributeProto { name: name.into(), r#type: attribute_type::FLOATS, floats: v.to_vec(), ..Default::default() }
    }

    pub fn str_attr(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type: attribute_type::STRING,
            s: bytes::Bytes::copy_from_slice(v.as_bytes()),
            ..Default::default()
        }
    }

    /// A node with attributes, named after its first output.
    pub fn node_with(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto { attribute: attrs, ..node(op, outputs[0], inputs, outputs) }
    }

    /// An opset-17 model.
    pub fn model(
        nodes: Vec<NodeProto>,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        inits: Vec<TensorProto>,
    ) -> ModelProto {
        model_opset(17, nodes, inputs, outputs, inits)
    }

    /// A model importing the given ai.onnx opset.
    pub fn model_opset(
        opset: i64,
        nodes: Vec<NodeProto>,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        inits: Vec<TensorProto>,
    ) -> ModelProto {
        ModelProto {
            ir_version: if opset < 9 { 3 } else { 8 },
            opset_import: vec![OperatorSetIdProto { domain: String::new(), version: opset }],
            graph: Some(GraphProto {
                node: nodes,
                name: "test".into(),
                initializer: inits,
                input: inputs,
                output: outputs,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn encode(m: &ModelProto) -> bytes::Bytes {
        use prost::Message;
        bytes::Bytes::from(m.encode_to_vec())
    }
}

/// Loading the vendored ONNX backend cases (shared by the conformance and optimisation tests).
pub mod conformance {
    use std::path::{Path, PathBuf};

    use incept_ir::onnx::{self, ImportOptions};
    use incept_ir::{Error, Graph, OpError, Tensor};

    /// The vendored cases listed in MANIFEST.txt, as `suite/case`.
    pub fn cases() -> Vec<String> {
        let manifest =
            std::fs::read_to_string(super::repo_root().join("tests/conformance/MANIFEST.txt")).expect("MANIFEST.txt");
        manifest.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(str::to_string).collect()
    }

    /// The folder of a case.
    pub fn case_dir(case: &str) -> PathBuf {
        super::repo_root().join("tests/conformance/data").join(case)
    }

    /// The `test_data_set_*` folders of a case, sorted.
    pub fn test_sets(dir: &Path) -> Result<Vec<PathBuf>, String> {
        let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_")))
            .collect();
        sets.sort();
        Ok(sets)
    }

    /// The `PREFIX_N.pb` tensors of a test data set, in order.
    pub fn read_set(set: &Path, prefix: &str) -> Result<Vec<Tensor>, String> {
        let mut out = vec![];
        for i in 0.. {
            let p = set.join(format!("{prefix}_{i}.pb"));
            if !p.exists() {
                break;
            }
            out.push(onnx::read_tensor_file(&p).map_err(|e| format!("{}: {e}", p.display()))?.1);
        }
        Ok(out)
    }

    /// Imports a case. The backend tests feed shapes, axes, pads and scales as graph inputs, which
    /// incept needs at compile time: when import reports a dynamic shape, the integer inputs are frozen
    /// to their test values, then (if still dynamic) every input. The ops themselves still run in the
    /// interpreter either way; freezing only fixes what shape inference may know.
    pub fn import_case(model: &Path, inputs: Vec<Tensor>) -> Result<(Graph, Vec<Tensor>), String> {
        let (proto, _) = onnx::open(model).map_err(|e| format!("open: {e}"))?;
        let names = onnx::graph_input_names(&proto);
        let attempt = |freeze: &dyn Fn(&Tensor) -> bool| -> Result<(Graph, Vec<Tensor>), Error> {
            let mut opts = ImportOptions::default();
            let mut rest = vec![];
            for (name, t) in names.iter().zip(&inputs) {
                if freeze(t) {
                    opts.frozen_inputs.insert(name.clone(), t.clone());
                } else {
                    opts.input_shapes.insert(name.clone(), t.shape().to_vec());
                    rest.push(t.clone());
                }
            }
            Ok((onnx::load(model, &opts)?, rest))
        };
        // Shapes, or other inputs that must be constants (Dropout's training_mode), known only at run time.
        let dynamic = |e: &Error| match e {
            Error::Node { error: OpError::DynamicShape(_), .. } => true,
            Error::Node { error: OpError::Unsupported(m), .. } => m.contains("computed at run time"),
            _ => false,
        };
        match attempt(&|_| false) {
            Err(e) if dynamic(&e) => match attempt(&|t| t.dtype().is_int()) {
                Err(e) if dynamic(&e) => attempt(&|_| true),
                r => r,
            },
            r => r,
        }
        .map_err(|e| format!("import: {e}"))
    }
}
