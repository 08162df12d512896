//! The Rust API as an application meets it: caller-owned buffers (`run_into`), outputs by name,
//! typed tensor access, `.npy` from the runtime alone, and errors in the library's own terms.

use incept_compiler::{CompileOptions, compile};
use incept_runtime::{DType, Model, RunError, Tensor, TensorError, TensorMut, TensorRef, npy, top_k};
use incept_tests::build::*;
use incept_tests::{FIXTURES, fixtures_dir};

/// Counts the calling thread's heap allocations, to hold `run_into` to its promise.
struct Counting;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the count is a thread-local Cell.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract, forwarded.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract, forwarded.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn fixture(name: &str) -> (Model, Tensor) {
    let input = npy::read(fixtures_dir().join(format!("{name}.input.npy"))).expect("input");
    let mut import = incept_ir::onnx::ImportOptions::default();
    import.input_shapes.insert("input".into(), input.shape().to_vec());
    let opts = CompileOptions { import, threads: 2, ..Default::default() };
    let model = compile(&fixtures_dir().join(format!("{name}.onnx")), &opts).expect("compile");
    (model, input)
}

/// A buffer of `len` bytes starting `misalign` bytes past a 64-byte boundary.
fn buffer(storage: &mut Vec<u64>, len: usize, misalign: usize) -> &mut [u8] {
    storage.resize((len + misalign + 128) / 8, 0);
    let base = storage.as_mut_ptr() as usize;
    let start = base.next_multiple_of(64) - base + misalign;
    let bytes: &mut [u8] =
        // SAFETY: `storage` holds at least start + len bytes, and u64 storage may be viewed as bytes.
        unsafe { std::slice::from_raw_parts_mut(storage.as_mut_ptr().cast::<u8>(), storage.len() * 8) };
    &mut bytes[start..start + len]
}

#[test]
fn run_into_writes_caller_buffers_of_any_alignment_with_the_same_bits() {
    for name in FIXTURES {
        let (model, input) = fixture(name);
        let want = model.run(std::slice::from_ref(&input)).expect("run");
        let spec = model.plan().outputs[0].clone();
        let out_len = spec.shape.iter().product::<usize>() * spec.dtype.size();
        for misalign in [0, 4, 12] {
            let (mut in_store, mut out_store) = (vec![], vec![]);
            let in_buf = buffer(&mut in_store, input.bytes().len(), misalign);
            in_buf.copy_from_slice(input.bytes());
            let out_buf = buffer(&mut out_store, out_len, misalign);
            // NaN everywhere: an output element the run does not write shows.
            out_buf.fill(0xFF);
            let x = TensorRef::from_bytes(DType::F32, input.shape(), in_buf).expect("view");
            let mut y = [TensorMut::from_bytes(spec.dtype, &spec.shape, out_buf).expect("view")];
            // Twice: the second run reuses the arena and must not depend on the first.
            for _ in 0..2 {
                model.run_into(&[x], &mut y).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(y[0].bytes(), want[0].bytes(), "{name}: run_into at misalignment {misalign} differs");
            }
        }
    }
}

/// A serving loop: after the first run, `run_into` allocates nothing at all on the calling
/// thread, with or without helper threads.
#[test]
fn run_into_allocates_nothing_after_the_first_run() {
    for (name, threads) in FIXTURES.iter().flat_map(|n| [(n, 1), (n, 2)]) {
        let input = npy::read(fixtures_dir().join(format!("{name}.input.npy"))).expect("input");
        let mut import = incept_ir::onnx::ImportOptions::default();
        import.input_shapes.insert("input".into(), input.shape().to_vec());
        let opts = CompileOptions { import, threads, ..Default::default() };
        let model = compile(&fixtures_dir().join(format!("{name}.onnx")), &opts).expect("compile");
        let spec = model.plan().outputs[0].clone();
        let mut out = Tensor::zeros(spec.dtype, &spec.shape);
        let x = [input.view()];
        model.run_into(&x, &mut [out.view_mut()]).expect("first run");
        let before = ALLOCATIONS.with(|c| c.get());
        for _ in 0..5 {
            let mut y = [out.view_mut()];
            model.run_into(&x, &mut y).expect("run");
        }
        let allocated = ALLOCATIONS.with(|c| c.get()) - before;
        assert_eq!(allocated, 0, "{name} at {threads} threads: {allocated} allocations in 5 runs");
        assert_eq!(out.bytes(), model.run(std::slice::from_ref(&input)).expect("run")[0].bytes());
    }
}

#[test]
fn run_into_refuses_buffers_that_do_not_match() {
    let (model, input) = fixture("mini_resnet");
    let spec = model.plan().outputs[0].clone();
    let mut good = Tensor::zeros(spec.dtype, &spec.shape);
    let x = input.view();
    let err = model.run_into(&[x], &mut []).expect_err("no outputs");
    assert!(matches!(err, RunError::OutputCount { expected: 1, got: 0, .. }), "{err}");
    let mut wrong = Tensor::zeros(DType::F32, &[1, 3]);
    let err = model.run_into(&[x], &mut [wrong.view_mut()]).expect_err("shape");
    assert!(err.to_string().contains(&format!("output '{}': expected a buffer for f32[", spec.name)), "{err}");
    let mut ints = Tensor::zeros(DType::I32, &spec.shape);
    assert!(matches!(model.run_into(&[x], &mut [ints.view_mut()]), Err(RunError::Output { .. })));
    let err = model.run_into(&[], &mut [good.view_mut()]).expect_err("no inputs");
    assert!(matches!(err, RunError::InputCount { .. }), "{err}");
    model.run_into(&[x], &mut [good.view_mut()]).expect("the right buffers run");
    assert!(good.as_f32().expect("f32").iter().any(|&v| v != 0.0));
}

/// Two outputs (one intermediate), addressed by name.
#[test]
fn outputs_are_addressable_by_name() {
    let m = model(
        vec![node("Relu", "r", &["x"], &["pos"]), node("Neg", "n", &["pos"], &["neg"])],
        vec![value("x", &[2, 3])],
        vec![value("neg", &[2, 3]), value("pos", &[2, 3])],
        vec![],
    );
    let model = compile(encode(&m).to_vec(), &CompileOptions::default()).expect("compile");
    let x = Tensor::from_f32(&[2, 3], &[-1.0, 2.0, -3.0, 4.0, 0.5, -0.5]).expect("tensor");
    let out = model.run(std::slice::from_ref(&x)).expect("run");
    assert_eq!(out.names(), ["neg", "pos"]);
    assert_eq!(out.get("pos").expect("pos").as_f32().expect("f32"), [0.0, 2.0, 0.0, 4.0, 0.5, 0.0]);
    assert_eq!(out.get("neg").expect("neg").as_f32().expect("f32"), [-0.0, -2.0, -0.0, -4.0, -0.5, -0.0]);
    assert_eq!(out[1].bytes(), out.get("pos").expect("pos").bytes());
    let err = out.get("relu").expect_err("unknown");
    assert_eq!(err.to_string(), "no output named 'relu' (outputs: neg, pos)");
    let names: Vec<&str> = out.iter_named().map(|(n, _)| n).collect();
    assert_eq!(names, ["neg", "pos"]);
    let pos = out.take("pos").expect("take");
    assert_eq!(pos.to_f32_vec().expect("f32"), [0.0, 2.0, 0.0, 4.0, 0.5, 0.0]);
    // By name, inputs too: a missing or doubled one is named.
    let err = model.run_named(&[]).expect_err("missing");
    assert_eq!(err.to_string(), "input 'x' is not given (inputs: x)");
    let err = model.run_named(&[("x", &x), ("x", &x)]).expect_err("twice");
    assert_eq!(err.to_string(), "input 'x' is given twice");
}

#[test]
fn tensors_check_their_dtype_and_length() {
    let t = Tensor::new(&[2, 2], &[1i64, 2, 3, 4]).expect("i64");
    assert_eq!(t.dtype(), DType::I64);
    assert_eq!(t.as_slice::<i64>().expect("i64"), [1, 2, 3, 4]);
    assert_eq!(t.as_f32().expect_err("not f32"), TensorError::DType { wanted: DType::F32, got: DType::I64 });
    assert_eq!(t.to_f32_vec().expect_err("not f32").to_string(), "the tensor holds i64, not f32");
    let err = Tensor::from_f32(&[2, 3], &[1.0; 5]).expect_err("length");
    assert_eq!(err.to_string(), "shape [2,3] holds 24 bytes of f32, 20 given");
    assert!(Tensor::from_bytes(DType::F32, &[usize::MAX, 2], &[]).is_err());
    let mut m = Tensor::zeros(DType::U8, &[3]);
    m.as_slice_mut::<u8>().expect("u8")[1] = 7;
    assert_eq!(m.bytes(), [0, 7, 0]);
    assert!(TensorRef::new(&[3], &[1.0f32, 2.0]).is_err());
    let mut buf = [0u16; 4];
    assert_eq!(TensorMut::new(&[2, 2], &mut buf).expect("u16").dtype(), DType::U16);
}

#[test]
fn top_k_ranks_largest_first_with_nans_last_and_ties_in_index_order() {
    let v = [0.5, f32::NAN, 3.0, -1.0, 3.0, f32::NEG_INFINITY];
    let got = top_k(&v, 4);
    assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 4, 0, 3]);
    let all = top_k(&v, 10);
    assert_eq!(all.iter().map(|p| p.0).collect::<Vec<_>>(), [2, 4, 0, 3, 5, 1]);
    let t = Tensor::from_f32(&[1, 6], &v).expect("tensor");
    assert_eq!(t.top_k(1).expect("f32")[0], (2, 3.0));
}

#[test]
fn a_wrong_batch_says_what_the_model_was_compiled_for() {
    let (model, _) = fixture("mini_resnet");
    let x = Tensor::zeros(DType::F32, &[8, 3, 64, 64]);
    let err = model.run(&[x]).expect_err("batch 8");
    let msg = err.to_string();
    assert!(msg.contains("was compiled for batch size 1; compile it again for batch 8"), "{msg}");
    let x = Tensor::zeros(DType::F32, &[1, 64, 64, 3]);
    assert!(!model.run(&[x]).expect_err("nhwc").to_string().contains("batch"));
}

#[test]
fn the_runtime_reads_npy_as_the_ir_does() {
    for name in FIXTURES {
        let path = fixtures_dir().join(format!("{name}.input.npy"));
        let rt = npy::read(&path).expect("runtime npy");
        let ir = incept_ir::npy::read(&path).expect("ir npy");
        assert_eq!((rt.shape(), rt.bytes()), (ir.shape(), &ir.bytes()[..]));
        assert_eq!(npy::to_bytes(&rt), incept_ir::npy::to_bytes(&ir));
        let back = incept_runtime::Tensor::try_from(&ir).expect("convert");
        assert_eq!(incept_ir::Tensor::from(&back).bytes(), ir.bytes());
    }
    let err = npy::read("/nonexistent/x.npy").expect_err("missing");
    assert!(err.to_string().starts_with("cannot read '/nonexistent/x.npy'"), "{err}");
}

/// Library errors name library options; the CLI adds its flags as a hint.
#[test]
fn library_errors_speak_library_terms() {
    let path = fixtures_dir().join("torch_resnet_mini.onnx");
    let err = compile(&path, &CompileOptions::default()).err().expect("a dynamic batch is refused");
    let msg = err.to_string();
    assert!(msg.contains("ImportOptions::dims") && !msg.contains("--dim"), "{msg}");
}
