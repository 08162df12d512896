//! Deliberate miscompilations, for testing the tests. A differential test or `incept check` that
//! passes with a fault injected cannot catch that class of bug; the mutation checks in
//! `tests/tests/jit_epilogues.rs` and `compiler/tests/cli.rs` make sure they fail.

use std::str::FromStr;

/// A way to compile some nodes wrongly on purpose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Lower a fused op's base (Conv, ConvTranspose, Gemm, MatMul) with all of the node's inputs
    /// instead of its own, so that the first epilogue operand of a conv without a bias (or a Gemm
    /// without C) is also read as its bias: the operand-numbering bug of issue 7.
    EpilogueOperandAsBias,
    /// Add 0.25 to every element of this node's first output, after its kernels ran.
    Corrupt { node: String },
    /// Pack bf16 weights with each pair of consecutive k swapped (the pair layout mistaken).
    Bf16SwappedPairs,
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Fault, String> {
        match s.split_once('=') {
            None if s == "epilogue-operand-as-bias" => Ok(Fault::EpilogueOperandAsBias),
            None if s == "bf16-swapped-pairs" => Ok(Fault::Bf16SwappedPairs),
            Some(("corrupt", node)) if !node.is_empty() => Ok(Fault::Corrupt { node: node.to_string() }),
            _ => Err(format!("unknown fault '{s}' (epilogue-operand-as-bias, corrupt=NODE, bf16-swapped-pairs)")),
        }
    }
}
