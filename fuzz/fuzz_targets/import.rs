//! Fuzzes ONNX import + verification: any input must give a graph or an error, never a panic.
//! Run with `cargo fuzz run import` (nightly, or RUSTC_BOOTSTRAP=1 on stable), seeding the corpus
//! with tests/fixtures/*.onnx.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let opts = incept_ir::onnx::ImportOptions::default();
    if let Ok(g) = incept_ir::onnx::load_bytes(bytes::Bytes::copy_from_slice(data), &opts) {
        let _ = incept_ir::verify::verify(&g);
        let _ = incept_ir::text::print(&g);
    }
});
