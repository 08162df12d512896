//! Older op versions import with the semantics of their opset (attributes that later became
//! inputs, changed defaults, opset-6 broadcasting), initializers listed as graph inputs, and
//! model-local functions.

use incept_ir::onnx::proto::{FunctionProto, ModelProto, OperatorSetIdProto, TensorProto};
use incept_ir::onnx::{self, ImportOptions};
use incept_ir::{Tensor, interp, verify};
use incept_tests::build::*;

fn run(m: &ModelProto, inputs: Vec<Tensor>) -> Vec<Tensor> {
    let g = onnx::load_bytes(encode(m), &ImportOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    verify::verify(&g).expect("verify");
    interp::run(&g, &inputs).unwrap_or_else(|e| panic!("{e}"))
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.view::<f32>().expect("f32").into_owned()
}

fn t(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec())
}

/// One node `op(x) -> y` with attributes at an opset.
fn unary(opset: i64, op: &str, attrs: Vec<incept_ir::onnx::proto::AttributeProto>, x: &[i64], y: &[i64]) -> ModelProto {
    model_opset(opset, vec![node_with(op, &["x"], &["y"], attrs)], vec![value("x", x)], vec![value("y", y)], vec![])
}

#[test]
fn clip_bounds_as_attributes_before_opset_11() {
    let m = unary(10, "Clip", vec![float_attr("min", 0.0), float_attr("max", 6.0)], &[3], &[3]);
    assert_eq!(f32s(&run(&m, vec![t(&[3], &[-1.0, 3.0, 8.0])])[0]), [0.0, 3.0, 6.0]);
    let m = unary(6, "Clip", vec![], &[2], &[2]);
    assert_eq!(f32s(&run(&m, vec![t(&[2], &[-1e30, 1e30])])[0]), [-1e30, 1e30]);
}

#[test]
fn axes_and_sizes_as_attributes_before_they_became_inputs() {
    let x = t(&[2, 1, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let m = unary(11, "Squeeze", vec![ints_attr("axes", &[1])], &[2, 1, 3], &[2, 3]);
    assert_eq!(run(&m, vec![x.clone()])[0].shape(), &[2, 3]);
    let m = unary(11, "Unsqueeze", vec![ints_attr("axes", &[0, 3])], &[2, 1, 3], &[1, 2, 1, 1, 3]);
    assert_eq!(run(&m, vec![x.clone()])[0].shape(), &[1, 2, 1, 1, 3]);
    let m = unary(13, "ReduceMean", vec![ints_attr("axes", &[2]), int_attr("keepdims", 0)], &[2, 1, 3], &[2, 1]);
    assert_eq!(f32s(&run(&m, vec![x.clone()])[0]), [2.0, 5.0]);
    let m = unary(12, "ReduceSum", vec![ints_attr("axes", &[0])], &[2, 1, 3], &[1, 1, 3]);
    assert_eq!(f32s(&run(&m, vec![x.clone()])[0]), [5.0, 7.0, 9.0]);
    let m = unary(
        9,
        "Slice",
        vec![ints_attr("starts", &[1]), ints_attr("ends", &[3]), ints_attr("axes", &[2])],
        &[2, 1, 3],
        &[2, 1, 2],
    );
    assert_eq!(f32s(&run(&m, vec![x.clone()])[0]), [2.0, 3.0, 5.0, 6.0]);
    let m = unary(
        10,
        "Pad",
        vec![ints_attr("pads", &[0, 0, 1, 0, 0, 0]), float_attr("value", 9.0)],
        &[2, 1, 3],
        &[2, 1, 4],
    );
    assert_eq!(f32s(&run(&m, vec![x.clone()])[0]), [9.0, 1.0, 2.0, 3.0, 9.0, 4.0, 5.0, 6.0]);
    let split = model_opset(
        11,
        vec![node_with("Split", &["x"], &["a", "b"], vec![int_attr("axis", 2), ints_attr("split", &[1, 2])])],
        vec![value("x", &[2, 1, 3])],
        vec![value("a", &[2, 1, 1]), value("b", &[2, 1, 2])],
        vec![],
    );
    let out = run(&split, vec![x]);
    assert_eq!((f32s(&out[0]), f32s(&out[1])), (vec![1.0, 4.0], vec![2.0, 3.0, 5.0, 6.0]));
}

#[test]
fn softmax_before_opset_13_normalises_the_flattened_rows() {
    let x = t(&[2, 3, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]);
    let old = f32s(&run(&unary(11, "Softmax", vec![], &[2, 3, 2], &[2, 3, 2]), vec![x.clone()])[0]);
    // Axis 1 by default and each row of 6 sums to 1.
    for row in old.chunks(6) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{row:?}");
    }
    let new = f32s(&run(&unary(13, "Softmax", vec![int_attr("axis", 1)], &[2, 3, 2], &[2, 3, 2]), vec![x])[0]);
    // From 13 on, only the 3 entries along axis 1 sum to 1.
    assert!((new[0] + new[2] + new[4] - 1.0).abs() < 1e-6);
    assert!((old[0] + old[2] + old[4] - 1.0).abs() > 0.1);
}

#[test]
fn upsample_and_resize_10_use_asymmetric_floor() {
    let x = t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let want = [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0, 3.0, 3.0, 4.0, 4.0];
    let m = unary(7, "Upsample", vec![floats_attr("scales", &[1.0, 1.0, 2.0, 2.0])], &[1, 1, 2, 2], &[1, 1, 4, 4]);
    assert_eq!(f32s(&run(&m, vec![x.clone()])[0]), want);
    for (opset, op) in [(9, "Upsample"), (10, "Resize")] {
        let scales = TensorProto {
            name: "s".into(),
            dims: vec![4],
            data_type: 1,
            float_data: vec![1.0, 1.0, 2.0, 2.0],
            ..Default::default()
        };
        let m = model_opset(
            opset,
            vec![node_with(op, &["x", "s"], &["y"], vec![str_attr("mode", "nearest")])],
            vec![value("x", &[1, 1, 2, 2])],
            vec![value("y", &[1, 1, 4, 4])],
            vec![scales],
        );
        assert_eq!(f32s(&run(&m, vec![x.clone()])[0]), want, "{op}-{opset}");
    }
}

#[test]
fn batchnorm_spatial_0_normalises_per_activation() {
    let params = |name: &str, v: [f32; 2]| f32_tensor(name, &[1, 2], &v);
    let m = model_opset(
        7,
        vec![node_with(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            &["y"],
            vec![int_attr("spatial", 0), float_attr("epsilon", 0.0)],
        )],
        vec![value("x", &[2, 1, 2])],
        vec![value("y", &[2, 1, 2])],
        vec![params("s", [1.0, 2.0]), params("b", [0.0, 1.0]), params("m", [1.0, 0.0]), params("v", [4.0, 1.0])],
    );
    let y = f32s(&run(&m, vec![t(&[2, 1, 2], &[3.0, 1.0, 5.0, -1.0])])[0]);
    assert_eq!(y, [1.0, 3.0, 2.0, -1.0]);
}

#[test]
fn initializers_listed_as_inputs_are_constants() {
    // IR version 3 models list every initializer among the graph inputs.
    let mut m = model_opset(
        8,
        vec![node("Add", "add", &["x", "w"], &["y"])],
        vec![value("x", &[2]), value("w", &[2])],
        vec![value("y", &[2])],
        vec![],
    );
    m.graph.as_mut().expect("graph").initializer.push(f32_tensor("w", &[2], &[10.0, 20.0]));
    let g = onnx::load_bytes(encode(&m), &ImportOptions::default()).expect("import");
    assert_eq!(g.input_names(), ["x"]);
    assert_eq!(f32s(&interp::run(&g, &[t(&[2], &[1.0, 2.0])]).expect("run")[0]), [11.0, 22.0]);
}

#[test]
fn dropout_in_inference_mode_only() {
    let mode = |v: bool| TensorProto {
        name: "mode".into(),
        dims: vec![],
        data_type: 9,
        int32_data: vec![v as i32],
        ..Default::default()
    };
    let make = |training: bool| {
        model_opset(
            13,
            vec![node("Dropout", "drop", &["x", "", "mode"], &["y"])],
            vec![value("x", &[2])],
            vec![value("y", &[2])],
            vec![mode(training)],
        )
    };
    assert_eq!(f32s(&run(&make(false), vec![t(&[2], &[1.0, 2.0])])[0]), [1.0, 2.0]);
    let e = onnx::load_bytes(encode(&make(true)), &ImportOptions::default()).expect_err("training").to_string();
    assert!(e.contains("'drop'") && e.contains("training mode"), "{e}");
}

#[test]
fn opset_6_broadcasting() {
    let m = model_opset(
        6,
        vec![node_with("Add", &["a", "b"], &["y"], vec![int_attr("broadcast", 1), int_attr("axis", 1)])],
        vec![value("a", &[2, 3, 2])],
        vec![value("y", &[2, 3, 2])],
        vec![f32_tensor("b", &[3], &[10.0, 20.0, 30.0])],
    );
    let y = f32s(&run(&m, vec![t(&[2, 3, 2], &[0.0; 12])])[0]);
    assert_eq!(y, [10.0, 10.0, 20.0, 20.0, 30.0, 30.0, 10.0, 10.0, 20.0, 20.0, 30.0, 30.0]);
    let m = model_opset(
        6,
        vec![node("PRelu", "prelu", &["x", "slope"], &["y"])],
        vec![value("x", &[1, 2, 2])],
        vec![value("y", &[1, 2, 2])],
        vec![f32_tensor("slope", &[2], &[0.5, 0.25])],
    );
    assert_eq!(f32s(&run(&m, vec![t(&[1, 2, 2], &[-4.0, 4.0, -4.0, 4.0])])[0]), [-2.0, 4.0, -1.0, 4.0]);
}

#[test]
fn model_local_functions_are_inlined() {
    // custom.ScaledRelu6(X) = Clip(X * scale, 0, 6), with `scale` an attribute of the call.
    let mut scale = node_with("Constant", &[], &["scale"], vec![]);
    let mut attr = float_attr("value_float", 0.0);
    attr.ref_attr_name = "scale".into();
    scale.attribute.push(attr);
    let f = FunctionProto {
        name: "ScaledRelu6".into(),
        domain: "custom".into(),
        input: vec!["X".into()],
        output: vec!["Y".into()],
        attribute: vec!["scale".into()],
        node: vec![
            scale,
            node_with("Constant", &[], &["lo"], vec![float_attr("value_float", 0.0)]),
            node_with("Constant", &[], &["hi"], vec![float_attr("value_float", 6.0)]),
            node("Mul", "mul", &["X", "scale"], &["xs"]),
            node("Clip", "clip", &["xs", "lo", "hi"], &["Y"]),
        ],
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 17 }],
        ..Default::default()
    };
    let mut call = node_with("ScaledRelu6", &["x"], &["y"], vec![float_attr("scale", 2.0)]);
    call.domain = "custom".into();
    let mut m = model(vec![call], vec![value("x", &[3])], vec![value("y", &[3])], vec![]);
    m.functions.push(f);
    m.opset_import.push(OperatorSetIdProto { domain: "custom".into(), version: 1 });
    assert_eq!(f32s(&run(&m, vec![t(&[3], &[-1.0, 1.0, 5.0])])[0]), [0.0, 2.0, 6.0]);
}
