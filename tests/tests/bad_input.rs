//! Malformed models give clear errors that name the node or field, never a panic and never an
//! absurd allocation. The last test feeds thousands of mutated fixtures through import + verify.

use std::panic::{AssertUnwindSafe, catch_unwind};

use bytes::Bytes;
use incept_ir::onnx::proto::{NodeProto, StringStringEntryProto, data_location};
use incept_ir::onnx::{self, ImportOptions};
use incept_ir::text::parse::SplitMix;
use incept_ir::verify;
use incept_tests::build::*;
use incept_tests::{FIXTURES, fixtures_dir};

fn import_err(bytes: Bytes) -> String {
    match onnx::load_bytes(bytes, &ImportOptions::default()) {
        Ok(_) => panic!("import succeeded on a bad model"),
        Err(e) => e.to_string(),
    }
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(format!("{name}.onnx"))).expect("fixture")
}

/// A valid relu model, used as the base of several cases.
fn relu_model() -> incept_ir::onnx::proto::ModelProto {
    model(vec![node("Relu", "relu1", &["x"], &["y"])], vec![value("x", &[1, 4])], vec![value("y", &[1, 4])], vec![])
}

#[test]
fn valid_base_model_imports() {
    onnx::load_bytes(encode(&relu_model()), &ImportOptions::default()).expect("the base model is valid");
}

#[test]
fn truncated_file() {
    let bytes = fixture_bytes("mini_resnet");
    let e = import_err(Bytes::from(bytes[..bytes.len() / 2].to_vec()));
    assert!(e.contains("protobuf decoding failed"), "{e}");
}

#[test]
fn empty_file() {
    let e = import_err(Bytes::new());
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn random_bytes() {
    let mut rng = SplitMix(7);
    for _ in 0..200 {
        let n = (rng.next_u64() % 4096) as usize;
        let v: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        assert!(onnx::load_bytes(Bytes::from(v), &ImportOptions::default()).is_err());
    }
}

#[test]
fn wrong_wire_type() {
    // Field 7 (graph) must be length-delimited; here it is a varint.
    let e = import_err(Bytes::from_static(&[0x08, 0x08, 0x38, 0x01]));
    assert!(e.contains("protobuf decoding failed") && e.contains("wire type"), "{e}");
}

#[test]
fn not_an_onnx_model() {
    // A valid protobuf without an IR version.
    let e = import_err(Bytes::from_static(&[0x12, 0x03, b'a', b'b', b'c']));
    assert!(e.contains("ir_version"), "{e}");
}

#[test]
fn missing_initializer() {
    let m = model(
        vec![node("Conv", "conv1", &["x", "w"], &["y"])],
        vec![value("x", &[1, 3, 8, 8])],
        vec![value("y", &[1, 4, 6, 6])],
        vec![],
    );
    let e = import_err(encode(&m));
    assert!(e.contains("'conv1'") && e.contains("'w'"), "{e}");
}

#[test]
fn undefined_value() {
    let m = model(
        vec![node("Relu", "r1", &["x"], &["a"]), node("Add", "add1", &["a", "nowhere"], &["y"])],
        vec![value("x", &[2])],
        vec![value("y", &[2])],
        vec![],
    );
    let e = import_err(encode(&m));
    assert!(e.contains("'add1'") && e.contains("'nowhere'"), "{e}");
}

#[test]
fn cycle() {
    let m = model(
        vec![node("Add", "a1", &["x", "c"], &["b"]), node("Relu", "r1", &["b"], &["c"])],
        vec![value("x", &[2])],
        vec![value("c", &[2])],
        vec![],
    );
    let e = import_err(encode(&m));
    assert!(e.contains("cycle") && e.contains("'a1'") && e.contains("'r1'"), "{e}");
}

#[test]
fn reshape_to_wrong_element_count() {
    let m = model(
        vec![node("Reshape", "reshape1", &["x", "shape"], &["y"])],
        vec![value("x", &[2, 3])],
        vec![value("y", &[4, 2])],
        vec![i64_tensor("shape", &[2], &[4, 2])],
    );
    let e = import_err(encode(&m));
    assert!(e.contains("'reshape1'") && e.contains("Reshape") && e.contains("6 elements"), "{e}");
}

#[test]
fn huge_tensor_claim() {
    let mut m = relu_model();
    let g = m.graph.as_mut().expect("graph");
    g.initializer.push(f32_tensor("big", &[1 << 20, 1 << 20], &[]));
    let e = import_err(encode(&m));
    assert!(e.contains("'big'") && e.contains("2^31"), "{e}");
    // No op may produce 2^40 elements either.
    let m = model(
        vec![node("Expand", "expand_big", &["x", "shape"], &["y"])],
        vec![value("x", &[1])],
        vec![value("y", &[1 << 20, 1 << 20])],
        vec![i64_tensor("shape", &[2], &[1 << 20, 1 << 20])],
    );
    let e = import_err(encode(&m));
    assert!(e.contains("'expand_big'") && e.contains("2^31"), "{e}");
}

#[test]
fn raw_data_length_mismatch() {
    let mut m = relu_model();
    let mut t = f32_tensor("w", &[4], &[]);
    t.raw_data = Bytes::from_static(&[0; 12]);
    m.graph.as_mut().expect("graph").initializer.push(t);
    let e = import_err(encode(&m));
    assert!(e.contains("'w'") && e.contains("12 bytes"), "{e}");
}

#[test]
fn unsupported_ops_are_listed_together() {
    let m = model(
        vec![
            node("Relu", "r1", &["x"], &["a"]),
            node("LSTM", "lstm1", &["a"], &["b"]),
            node("LSTM", "lstm2", &["b"], &["c"]),
            node("Gelu", "gelu1", &["c"], &["d"]),
            node("Rleu", "typo1", &["d"], &["y"]),
        ],
        vec![value("x", &[2])],
        vec![value("y", &[2])],
        vec![],
    );
    let e = import_err(encode(&m));
    // A standard operator incept lacks is told apart from a name that is no ONNX operator.
    assert!(
        e.contains("ONNX operator 'LSTM' (opset 17) is not supported by incept yet; nodes: 'lstm1', 'lstm2'")
            && e.contains("ONNX operator 'Gelu' is not defined in opset 17 (introduced in opset 20); nodes: 'gelu1'")
            && e.contains("'Rleu' is not an ONNX operator (did you mean 'Relu'?); nodes: 'typo1'"),
        "{e}"
    );
    let mut m = relu_model();
    m.graph.as_mut().expect("graph").node[0].domain = "com.microsoft".into();
    let e = import_err(encode(&m));
    assert!(
        e.contains("'Relu' is not an ONNX operator: it is a custom operator of domain 'com.microsoft'")
            && e.contains("'relu1'"),
        "{e}"
    );
}

#[test]
fn unsupported_versions() {
    let mut m = relu_model();
    m.ir_version = 99;
    assert!(import_err(encode(&m)).contains("IR version 99"));
    let mut m = relu_model();
    m.opset_import[0].version = 3;
    assert!(import_err(encode(&m)).contains("opset 3"));
}

#[test]
fn bad_attribute() {
    let mut n = node("Conv", "conv1", &["x", "w"], &["y"]);
    n.attribute.push(ints_attr("strides", &[0, 1]));
    let m = model(
        vec![n],
        vec![value("x", &[1, 1, 4, 4])],
        vec![value("y", &[1, 1, 2, 2])],
        vec![f32_tensor("w", &[1, 1, 3, 3], &[0.0; 9])],
    );
    let e = import_err(encode(&m));
    assert!(e.contains("'conv1'") && e.contains("strides"), "{e}");
    let mut n = node("Relu", "relu1", &["x"], &["y"]);
    n.attribute.push(ints_attr("bogus", &[1]));
    let m = model(vec![n], vec![value("x", &[2])], vec![value("y", &[2])], vec![]);
    let e = import_err(encode(&m));
    assert!(e.contains("'relu1'") && e.contains("bogus"), "{e}");
}

fn external_model(location: &str) -> incept_ir::onnx::proto::ModelProto {
    let mut m =
        model(vec![node("Add", "add1", &["x", "w"], &["y"])], vec![value("x", &[4])], vec![value("y", &[4])], vec![]);
    let mut t = f32_tensor("w", &[4], &[]);
    t.data_location = data_location::EXTERNAL;
    t.external_data = vec![StringStringEntryProto { key: "location".into(), value: location.into() }];
    m.graph.as_mut().expect("graph").initializer.push(t);
    m
}

#[test]
fn external_data_resolves_inside_and_refuses_escapes() {
    use prost::Message;
    let root = std::env::temp_dir().join(format!("incept-extdata-{}", std::process::id()));
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let weights: Vec<u8> = [1f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(dir.join("weights.bin"), &weights).expect("write");
    std::fs::write(root.join("outside.bin"), &weights).expect("write");

    let write = |name: &str, loc: &str| {
        let p = dir.join(name);
        std::fs::write(&p, external_model(loc).encode_to_vec()).expect("write model");
        p
    };
    let ok = write("ok.onnx", "weights.bin");
    let g = onnx::load(&ok, &ImportOptions::default()).expect("external data inside the folder loads");
    let w = g.const_value(g.value_by_name("w").expect("w")).expect("const");
    assert_eq!(w.view::<f32>().expect("f32").as_ref(), &[1.0, 2.0, 3.0, 4.0]);

    for loc in ["../outside.bin", "/etc/passwd", "sub/../../outside.bin"] {
        let p = write("bad.onnx", loc);
        let e = onnx::load(&p, &ImportOptions::default()).expect_err(loc).to_string();
        assert!(e.contains("'w'") && e.contains(loc), "{loc}: {e}");
    }
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.join("outside.bin"), dir.join("link.bin")).expect("symlink");
        let p = write("link.onnx", "link.bin");
        let e = onnx::load(&p, &ImportOptions::default()).expect_err("symlink escape").to_string();
        assert!(e.contains("outside the model's folder"), "{e}");
    }
    // From memory there is no folder to resolve against.
    let e = onnx::load_bytes(encode(&external_model("weights.bin")), &ImportOptions::default())
        .expect_err("from bytes")
        .to_string();
    assert!(e.contains("'w'") && e.contains("path"), "{e}");
    // Offsets past the end of the file.
    let mut m = external_model("weights.bin");
    m.graph.as_mut().expect("graph").initializer[0]
        .external_data
        .push(StringStringEntryProto { key: "offset".into(), value: "1000".into() });
    let p = dir.join("off.onnx");
    std::fs::write(&p, m.encode_to_vec()).expect("write");
    let e = onnx::load(&p, &ImportOptions::default()).expect_err("offset").to_string();
    assert!(e.contains("'w'") && e.contains("beyond the end"), "{e}");
    let _ = std::fs::remove_dir_all(&root);
}

/// Applies one random mutation: flip bytes, truncate, duplicate or delete a span, or overwrite a
/// span with random bytes.
fn mutate(data: &[u8], rng: &mut SplitMix) -> Vec<u8> {
    let mut v = data.to_vec();
    let n = v.len().max(1);
    let pos = (rng.next_u64() as usize) % n;
    let len = 1 + (rng.next_u64() as usize) % 16;
    match rng.next_u64() % 5 {
        0 => {
            for _ in 0..len {
                let i = (rng.next_u64() as usize) % n;
                if i < v.len() {
                    v[i] ^= 1 << (rng.next_u64() % 8);
                }
            }
        }
        1 => v.truncate(pos),
        2 => {
            let end = (pos + len * 8).min(v.len());
            let span = v[pos.min(v.len())..end].to_vec();
            v.splice(pos.min(v.len())..pos.min(v.len()), span);
        }
        3 => {
            let end = (pos + len).min(v.len());
            v.drain(pos.min(v.len())..end);
        }
        _ => {
            for i in pos..(pos + len).min(v.len()) {
                v[i] = rng.next_u64() as u8;
            }
        }
    }
    v
}

#[test]
fn mutated_fixtures_never_panic() {
    const PER_FIXTURE: usize = 500;
    let mut rng = SplitMix(0x1ce97);
    let (mut imported, mut rejected) = (0, 0);
    for name in FIXTURES {
        let original = fixture_bytes(name);
        for i in 0..PER_FIXTURE {
            let mut data = mutate(&original, &mut rng);
            // Sometimes stack a second mutation.
            if i % 3 == 0 {
                data = mutate(&data, &mut rng);
            }
            let result = catch_unwind(AssertUnwindSafe(|| {
                onnx::load_bytes(Bytes::from(data), &ImportOptions::default())
                    .and_then(|g| verify::verify(&g).map(|_| g))
            }));
            match result {
                Ok(Ok(_)) => imported += 1,
                Ok(Err(e)) => {
                    rejected += 1;
                    assert!(!e.to_string().is_empty());
                }
                Err(_) => panic!("{name}: mutation {i} panicked"),
            }
        }
    }
    println!("mutated fixtures: {imported} still import and verify, {rejected} rejected with an error, 0 panics");
    assert_eq!(imported + rejected, FIXTURES.len() * PER_FIXTURE);
}

#[test]
fn absurd_attribute_values_are_refused_not_overflowed() {
    let conv = |attr: incept_ir::onnx::proto::AttributeProto| {
        let mut n = node("Conv", "conv1", &["x", "w"], &["y"]);
        n.attribute.push(attr);
        model(
            vec![n],
            vec![value("x", &[1, 1, 4, 4])],
            vec![value("y", &[1, 1, 2, 2])],
            vec![f32_tensor("w", &[1, 1, 3, 3], &[0.0; 9])],
        )
    };
    for attr in [
        ints_attr("strides", &[i64::MAX, 1]),
        ints_attr("dilations", &[1 << 40, 1]),
        ints_attr("pads", &[i64::MAX, 0, 0, 0]),
        int_attr("group", i64::MIN),
    ] {
        let name = attr.name.clone();
        let e = import_err(encode(&conv(attr)));
        assert!(e.contains("'conv1'") && e.contains(&name), "{name}: {e}");
    }
    let pad = model(
        vec![node("Pad", "pad1", &["x", "pads"], &["y"])],
        vec![value("x", &[2])],
        vec![value("y", &[2])],
        vec![i64_tensor("pads", &[2], &[i64::MAX, i64::MAX])],
    );
    assert!(import_err(encode(&pad)).contains("'pad1'"));
    let slice = model(
        vec![node("Slice", "slice1", &["x", "s", "e", "a", "st"], &["y"])],
        vec![value("x", &[4])],
        vec![value("y", &[4])],
        vec![
            i64_tensor("s", &[1], &[0]),
            i64_tensor("e", &[1], &[4]),
            i64_tensor("a", &[1], &[0]),
            i64_tensor("st", &[1], &[i64::MIN]),
        ],
    );
    assert!(import_err(encode(&slice)).contains("'slice1'"));
    let split = model(
        vec![node("Split", "split1", &["x", "sizes"], &["a", "b", "c"])],
        vec![value("x", &[4])],
        vec![value("a", &[1]), value("b", &[1]), value("c", &[2])],
        vec![i64_tensor("sizes", &[3], &[i64::MAX, i64::MAX, 2])],
    );
    assert!(import_err(encode(&split)).contains("'split1'"));
    let mut d2s = node("DepthToSpace", "d2s", &["x"], &["y"]);
    d2s.attribute.push(int_attr("blocksize", 1 << 40));
    let m = model(vec![d2s], vec![value("x", &[1, 4, 2, 2])], vec![value("y", &[1, 1, 4, 4])], vec![]);
    assert!(import_err(encode(&m)).contains("'d2s'"));
    let m = model(
        vec![node("Relu", "r", &["x"], &["y"])],
        vec![value("x", &[1 << 62, 4])],
        vec![value("y", &[1 << 62, 4])],
        vec![],
    );
    let e = import_err(encode(&m));
    assert!(e.contains("'x'") && e.contains("2^31"), "{e}");
}

// Findings of the shape-arithmetic audit (issue 7). Each model used to panic in debug builds
// (an overflowing subtraction, `clamp` with min > max, an allocation per claimed part) or to be
// accepted with a made-up shape in release builds; each must now be refused naming the node.

fn import_err_names(m: &incept_ir::onnx::proto::ModelProto, node: &str, words: &[&str]) {
    let e = import_err(encode(m));
    assert!(e.contains(&format!("'{node}'")), "{e}");
    for w in words {
        assert!(e.contains(w), "expected {w:?} in: {e}");
    }
}

#[test]
fn conv_weights_with_an_empty_kernel_dim() {
    // No kernel_shape: the kernel comes from the weights, which are [4,4,1,0]. Release builds
    // inferred f32[1,4,2,3] for a [1,4,2,2] input and ran it to zeros.
    let m = model(
        vec![node("Conv", "conv1", &["x", "w"], &["y"])],
        vec![value("x", &[1, 4, 2, 2])],
        vec![value("y", &[1, 4, 2, 3])],
        vec![f32_tensor("w", &[4, 4, 1, 0], &[])],
    );
    import_err_names(&m, "conv1", &["Conv", "kernel_shape [1, 0]", "at least 1"]);
    let m = model(
        vec![node("ConvTranspose", "deconv1", &["x", "w"], &["y"])],
        vec![value("x", &[1, 4, 2, 2])],
        vec![value("y", &[1, 4, 2, 2])],
        vec![f32_tensor("w", &[4, 4, 0, 1], &[])],
    );
    import_err_names(&m, "deconv1", &["ConvTranspose", "kernel_shape [0, 1]"]);
}

#[test]
fn windows_over_an_empty_spatial_dim() {
    // SAME padding computed `(ceil(0 / stride) - 1) * stride`.
    let m = model(
        vec![node_with("Conv", &["x", "w"], &["y"], vec![str_attr("auto_pad", "SAME_UPPER")])],
        vec![value("x", &[1, 1, 0, 4])],
        vec![value("y", &[1, 1, 0, 4])],
        vec![f32_tensor("w", &[1, 1, 3, 3], &[0.0; 9])],
    );
    import_err_names(&m, "y", &["Conv", "spatial dim 0", "empty"]);
    let m = model(
        vec![node_with(
            "MaxPool",
            &["x"],
            &["y"],
            vec![ints_attr("kernel_shape", &[2, 2]), str_attr("auto_pad", "SAME_LOWER")],
        )],
        vec![value("x", &[1, 1, 4, 0])],
        vec![value("y", &[1, 1, 4, 0])],
        vec![],
    );
    import_err_names(&m, "y", &["MaxPool", "spatial dim 1", "empty"]);
    // The transposed conv's full size is `stride * (size - 1) + ...`.
    let m = model(
        vec![node("ConvTranspose", "deconv1", &["x", "w"], &["y"])],
        vec![value("x", &[1, 1, 0, 2])],
        vec![value("y", &[1, 1, 2, 4])],
        vec![f32_tensor("w", &[1, 1, 3, 3], &[0.0; 9])],
    );
    import_err_names(&m, "deconv1", &["ConvTranspose", "spatial dim 0", "empty"]);
}

#[test]
fn negative_step_slice_of_an_empty_dim() {
    // The start was clamped to [0, dim - 1] = [0, -1], which panics whatever the build.
    let m = model(
        vec![node("Slice", "slice1", &["x", "s", "e", "a", "st"], &["y"])],
        vec![value("x", &[0, 3])],
        vec![value("y", &[0, 3])],
        vec![
            i64_tensor("s", &[1], &[-1]),
            i64_tensor("e", &[1], &[i64::MIN]),
            i64_tensor("a", &[1], &[0]),
            i64_tensor("st", &[1], &[-1]),
        ],
    );
    // An empty slice is valid: the model imports, the dim stays empty, and it runs.
    let g = onnx::load_bytes(encode(&m), &ImportOptions::default()).expect("an empty slice imports");
    let y = g.outputs()[0];
    assert_eq!(g.ty(y).static_dims(), Some(vec![0, 3]));
    let x = incept_ir::Tensor::from_vec(vec![0, 3], Vec::<f32>::new());
    let out = incept_ir::interp::run(&g, &[x]).expect("run");
    assert_eq!(out[0].shape(), &[0, 3]);
}

#[test]
fn split_num_outputs_is_checked_before_listing_parts() {
    // num_outputs = 2^40 listed 2^40 sizes before comparing with the node's 2 outputs.
    let m = model(
        vec![node_with("Split", &["x"], &["a", "b"], vec![int_attr("num_outputs", 1 << 40)])],
        vec![value("x", &[4])],
        vec![value("a", &[2]), value("b", &[2])],
        vec![],
    );
    import_err_names(&m, "a", &["Split", "num_outputs is 1099511627776", "2 outputs"]);
}

#[test]
fn space_to_depth_channel_count_overflow() {
    // 4 channels * (2^31)^2 overflowed; an empty 0x0 image divides by any blocksize.
    let m = model(
        vec![node_with("SpaceToDepth", &["x"], &["y"], vec![int_attr("blocksize", 1 << 31)])],
        vec![value("x", &[1, 4, 0, 0])],
        vec![value("y", &[1, 4, 0, 0])],
        vec![],
    );
    import_err_names(&m, "y", &["SpaceToDepth", "overflow"]);
}

#[test]
fn resize_of_an_empty_dim_to_a_nonempty_one() {
    // Inference accepted it; the interpreter then clamped a source index to [0, -1] (a panic).
    let m = model(
        vec![node("Resize", "resize1", &["x", "", "", "sizes"], &["y"])],
        vec![value("x", &[1, 1, 0, 2])],
        vec![value("y", &[1, 1, 4, 4])],
        vec![i64_tensor("sizes", &[4], &[1, 1, 4, 4])],
    );
    import_err_names(&m, "resize1", &["Resize", "empty dim 2", "size 4"]);
    // Repeated axes were accepted silently (the last entry won).
    let m = model(
        vec![node_with("Resize", &["x", "", "", "sizes"], &["y"], vec![ints_attr("axes", &[2, -2])])],
        vec![value("x", &[1, 1, 2, 2])],
        vec![value("y", &[1, 1, 4, 2])],
        vec![i64_tensor("sizes", &[2], &[4, 3])],
    );
    import_err_names(&m, "y", &["Resize", "repeat axis 2"]);
}

#[test]
fn empty_dims_do_not_excuse_huge_ones() {
    // [0, 2^62] holds no elements, but the products of its other dims overflowed downstream
    // (Flatten, strides, byte sizes).
    let m = model(
        vec![node_with("Flatten", &["x"], &["y"], vec![int_attr("axis", 1)])],
        vec![value("x", &[0, 1 << 40, 1 << 40])],
        vec![value("y", &[0, 0])],
        vec![],
    );
    let e = import_err(encode(&m));
    assert!(e.contains("'x'") && e.contains("2^31"), "{e}");
    let mut m = relu_model();
    m.graph.as_mut().expect("graph").initializer.push(f32_tensor("w", &[0, 1 << 62], &[]));
    let e = import_err(encode(&m));
    assert!(e.contains("'w'") && e.contains("2^31"), "{e}");
    let m = model(
        vec![node_with("Reshape", &["x", "shape"], &["y"], vec![int_attr("allowzero", 1)])],
        vec![value("x", &[0])],
        vec![value("y", &[0, 1 << 62])],
        vec![i64_tensor("shape", &[2], &[0, 1 << 62])],
    );
    import_err_names(&m, "y", &["Reshape", "2^31"]);
}

#[test]
fn slice_with_more_starts_than_dims_and_no_axes() {
    // Found by the `mutate` fuzz target: without axes, starts name the dims 0..n, and n = 2 here
    // indexed past the one dim of the input.
    let m = model(
        vec![node("Slice", "slice1", &["x", "s", "e"], &["y"])],
        vec![value("x", &[4])],
        vec![value("y", &[1])],
        vec![i64_tensor("s", &[2], &[0, 0]), i64_tensor("e", &[2], &[1, 1])],
    );
    import_err_names(&m, "slice1", &["Slice", "2 starts without axes", "rank 1"]);
}

#[test]
fn pool_kernels_beyond_2_31_positions() {
    // SAME padding grows with the kernel, so any kernel "fits" a 5x5 input: [2^31, 3] passed
    // inference, and every output then visited 3 * 2^31 taps.
    let m = model(
        vec![node_with(
            "AveragePool",
            &["x"],
            &["y"],
            vec![ints_attr("kernel_shape", &[1 << 31, 3]), str_attr("auto_pad", "SAME_UPPER")],
        )],
        vec![value("x", &[1, 1, 5, 5])],
        vec![value("y", &[1, 1, 5, 5])],
        vec![],
    );
    import_err_names(&m, "y", &["AveragePool", "kernel_shape [2147483648, 3]", "2^31 positions"]);
}

#[test]
fn windows_the_jit_would_unroll_past_its_limit_are_refused() {
    // Found by the fuzz smoke sweeps: a 2^31-tap pool (valid ONNX with SAME padding) ran code
    // generation out of memory, the kernel unrolling every tap. Now lowering refuses it by name.
    let m = model(
        vec![node_with(
            "MaxPool",
            &["x"],
            &["y"],
            vec![ints_attr("kernel_shape", &[1 << 31, 1]), str_attr("auto_pad", "SAME_UPPER")],
        )],
        vec![value("x", &[1, 1, 5, 5])],
        vec![value("y", &[1, 1, 5, 5])],
        vec![],
    );
    let opts = incept_compiler::CompileOptions { threads: 1, ..Default::default() };
    let e = match incept_compiler::compile(encode(&m), &opts) {
        Ok(_) => panic!("compiled a 2^31-tap pool"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("'y'") && e.contains("MaxPool") && e.contains("2147483648 taps"), "{e}");
}

#[test]
fn mac_counts_saturate_instead_of_overflowing() {
    // Weights may be graph inputs, so no data bounds a conv's MACs: each of these four counts
    // 2^31 outputs times a 2^31-tap window (2^62), and their total overflowed u64.
    let conv = |i: usize| {
        let attrs = vec![str_attr("auto_pad", "SAME_UPPER")];
        NodeProto { name: format!("conv{i}"), ..node_with("Conv", &["xi", "w"], &[&format!("y{i}")], attrs) }
    };
    let m = model(
        std::iter::once(node("Identity", "id", &["x"], &["xi"])).chain((0..4).map(conv)).collect(),
        vec![value("x", &[1, 1, 1, 1 << 31]), value("w", &[1, 1, 1, 1 << 31])],
        (0..4).map(|i| value(&format!("y{i}"), &[1, 1, 1, 1 << 31])).collect(),
        vec![],
    );
    let g = onnx::load_bytes(encode(&m), &ImportOptions::default()).expect("a valid if absurd model");
    let stats = incept_ir::stats::Stats::of(&g);
    assert_eq!(stats.total_macs, u64::MAX);
    assert_eq!(stats.macs.get("Conv"), Some(&u64::MAX));
    // The pass manager adds up MACs before and after each pass (here the Identity's removal).
    let opts = incept_compiler::CompileOptions { threads: 1, ..Default::default() };
    let e = match incept_compiler::compile(encode(&m), &opts) {
        Ok(_) => panic!("compiled 2^31-tap convs"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("Conv") && e.contains("taps"), "{e}");
}

/// A chain of `n` ops (`Relu`, or `Add` of the running value and the graph input, which then has
/// `n` readers).
fn chain(op: &str, n: usize) -> incept_ir::onnx::proto::ModelProto {
    let name = |i: usize| if i + 1 == n { "y".to_string() } else { format!("t{i}") };
    let nodes = (0..n)
        .map(|i| {
            let prev = if i == 0 { "x".to_string() } else { name(i - 1) };
            let ins: Vec<&str> = if op == "Add" { vec![&prev, "x"] } else { vec![&prev] };
            node(op, &format!("n{i}"), &ins, &[&name(i)])
        })
        .collect();
    model(nodes, vec![value("x", &[1, 16])], vec![value("y", &[1, 16])], vec![])
}

/// A 100,000-node chain imports, optimises and compiles in linear time with bounded depth:
/// fusion starts a new Elementwise every `Expr::MAX_OPS` ops instead of growing (and cloning, and
/// recursing through) one expression per node, and a value with 100,000 readers costs nothing
/// per rewrite near it. The JIT's result matches the interpreter on the whole chain. (The time
/// bound is a tripwire for a blow-up, minutes in the quadratic form, not a benchmark.)
#[test]
fn hundred_thousand_node_chains_compile_in_linear_time() {
    use incept_compiler::passes::Pipeline;
    use incept_compiler::{CompileOptions, compile_graph, from_runtime, to_runtime};
    use incept_ir::ops::{Expr, Op};
    for op in ["Relu", "Add"] {
        let start = std::time::Instant::now();
        let g = onnx::load_bytes(encode(&chain(op, 100_000)), &ImportOptions::default()).expect("import");
        let mut optimised = g.clone();
        incept_compiler::passes::PassManager::new(&Pipeline::Full, &[], Default::default())
            .and_then(|m| m.run(&mut optimised))
            .unwrap_or_else(|e| panic!("{op}: passes: {e}"));
        let exprs: Vec<usize> = optimised
            .node_ids()
            .filter_map(|id| match &optimised.node(id).op {
                Op::Elementwise(e) => Some(e.expr.ops()),
                _ => None,
            })
            .collect();
        assert!(exprs.iter().all(|&k| k <= Expr::MAX_OPS), "{op}: an expression over the cap");
        assert!(exprs.len() >= 100_000 / Expr::MAX_OPS, "{op}: {} expressions", exprs.len());
        let (model, _) = compile_graph(g.clone(), &CompileOptions { threads: 1, ..Default::default() })
            .unwrap_or_else(|e| panic!("{op}: compile: {e}"));
        let x = incept_ir::Tensor::from_vec(vec![1, 16], (0..16).map(|i| i as f32 / 16.0 - 0.5).collect::<Vec<f32>>());
        let got = from_runtime(&model.run(&[to_runtime(&x).expect("input")]).expect("run")[0]).expect("output");
        let want = incept_ir::interp::run(&g, &[x]).expect("interpreter");
        assert!(
            incept_tests::max_rel_err(&got, &want[0]).expect("compare") <= 1e-6,
            "{op}: the chain's result differs"
        );
        let took = start.elapsed().as_secs_f64();
        assert!(took < 120.0, "{op}: 100,000 nodes took {took:.1} s");
        println!("{op}: 100,000 nodes imported, optimised, compiled and run twice in {took:.1} s");
    }
}
