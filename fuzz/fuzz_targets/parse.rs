//! Fuzzes the IR text parser: any text must parse or give a parse error, never panic. Graphs that
//! parse are verified, printed and parsed back (the printed form of a valid graph must parse),
//! then taken through the interpreter, passes and backend when small. Use the dictionary:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run parse -s none fuzz/corpus/parse fuzz/seeds/parse -- -dict=fuzz/dicts/ir_text.dict`.
#![no_main]

use incept_tests::exercise::{Budget, Outcome, exercise_graph};
use libfuzzer_sys::fuzz_target;

/// Element count above which a `random(SEED)` constant is not worth building: the parser accepts
/// up to 2^31 elements, which the fuzzer's memory limit does not.
const MAX_RANDOM_ELEMENTS: u128 = 1 << 20;

/// Whether every `TYPE[dims] random(` in the text is small (inline constants are bounded by the
/// text's length; only random ones can be large).
fn random_constants_are_small(text: &str) -> bool {
    text.match_indices("random").all(|(at, _)| {
        let before = &text[..at];
        let (Some(open), Some(close)) = (before.rfind('['), before.rfind(']')) else { return true };
        if close < open {
            return true;
        }
        before[open + 1..close]
            .split(',')
            .map(|d| d.trim().parse::<u128>().unwrap_or(1))
            .try_fold(1u128, |acc, d| acc.checked_mul(d.max(1)))
            .is_some_and(|n| n <= MAX_RANDOM_ELEMENTS)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if !random_constants_are_small(text) {
        return;
    }
    let Ok(g) = incept_ir::text::parse::parse(text) else { return };
    exercise_graph(g, &Budget::default(), Outcome::default()).assert_consistent();
});
