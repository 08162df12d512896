//! Fuzzes everything after import: any model bytes go through import, verification, the text
//! form, and for small graphs the interpreter, the passes, lowering, code generation and a run of
//! the compiled model on small inputs. Errors are fine; panics and crashes are not.
//! Run with `RUSTC_BOOTSTRAP=1 cargo fuzz run compile -s none -- -timeout=10`, seeding the corpus
//! with tests/fixtures and tests/conformance/data/node (see fuzz/README.md).
#![no_main]

use incept_tests::exercise::{Budget, exercise_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small models only: the fuzzer should spend its time on many cases, not on one large one.
    let budget = Budget { max_model_bytes: 64 << 10, ..Budget::default() };
    exercise_bytes(data, &budget).assert_consistent();
});
