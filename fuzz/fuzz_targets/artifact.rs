//! Fuzzes the `.incept` artifact loader: any bytes must decode to a valid plan or give an
//! error, never panic or read out of bounds. The tables are decoded both behind the digest
//! check (what `Model::load` does) and past it (so the fuzzer reaches the table reader, which a
//! random change would otherwise never get through the digest; most changes then meet the
//! compiler's seal: `artifact_run` fuzzes the table checks behind it). Nothing decoded is run:
//! an artifact is native code. Seed it with small artifacts:
//! `incept compile tests/fixtures/mini_resnet.onnx -o fuzz/corpus/artifact/mini_resnet.incept`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = incept_runtime::artifact::decode(data);
    if let Ok((plan, _)) = incept_runtime::artifact::decode_verified(data) {
        plan.validate().expect("a decoded plan validates");
    }
});
