//! Graph-to-graph optimisation passes and the manager that runs them.
//!
//! A pass is a small named rule: given a node, it declines (`Ok(None)`) or returns a [`Patch`].
//! The [`manager`] sweeps rules over the graph in topological order, applies their patches, runs
//! groups of passes to a fixed point, runs the verifier after every pass, and records per-pass
//! statistics. Two stages: `declutter` (portable and exact) and `lower` (target-specific).

pub mod decompose;
pub mod factorize;
pub mod fold;
pub mod fuse;
pub mod manager;
pub mod pad;
pub mod patch;
pub mod qdq;
pub mod simplify;
pub mod strides;
pub mod transpose;
pub mod util;

use incept_ir::graph::{Graph, NodeId};
use incept_ir::{Error as IrError, OpError};

pub use manager::{PassManager, PassStats, Pipeline, RunReport};
pub use patch::{Patch, PatchValue};

/// Whether a pass keeps results identical up to float rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exactness {
    /// Reassociates float arithmetic at most (e.g. folding BatchNorm into weights).
    Rounding,
    /// Changes results beyond rounding; opt-in only, and it reports the error it introduces.
    Approximate,
}

/// Options that passes read.
#[derive(Clone, Debug, Default)]
pub struct PassOptions {
    /// Relative weight error allowed for approximate factorisation (`None`: exact only).
    pub factorize_tolerance: Option<f64>,
    /// QDQ groups become integer ops (`--precision int8`).
    pub fuse_qdq: bool,
}

/// What passes see besides the graph.
pub struct PassContext<'a> {
    pub options: &'a PassOptions,
    /// The factorisation passes' report and bookkeeping.
    pub factorize: factorize::FactorizeState,
    /// The constants seen so far, by a cheap fingerprint (CSE finds a constant's twins here
    /// instead of among every node).
    pub consts: simplify::ConstIndex,
}

/// One rewrite rule.
pub trait Pass: Sync {
    fn name(&self) -> &'static str;
    /// One line for `--help` and the pass list.
    fn description(&self) -> &'static str;
    fn exactness(&self) -> Exactness {
        Exactness::Rounding
    }
    /// Tries to rewrite at `node`. `Ok(None)` when the rule does not apply.
    fn rewrite(&self, g: &Graph, node: NodeId, cx: &PassContext) -> Result<Option<Patch>, OpError>;
}

/// Errors of the pass pipeline, naming the pass and the node.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("pass {pass} at node '{node}' ({op}): {error}")]
    Rule { pass: &'static str, node: String, op: String, error: OpError },
    #[error("pass {pass} at node '{node}': {msg}")]
    Patch { pass: &'static str, node: String, msg: String },
    #[error("after pass {pass}: {error}")]
    Verify { pass: &'static str, error: IrError },
    #[error("unknown pass '{0}' (passes: {1})")]
    UnknownPass(String, String),
}

/// Every pass, by name, in the order the default pipelines run them.
pub fn all_passes() -> Vec<Box<dyn Pass>> {
    vec![
        Box::new(qdq::FuseQdq),
        Box::new(simplify::RemoveIdentity),
        Box::new(simplify::ConstantFold),
        Box::new(simplify::DeadCode),
        Box::new(simplify::CommonSubexpr),
        Box::new(decompose::DecomposeEinsum),
        Box::new(decompose::DecomposeAttention),
        Box::new(fold::FoldBatchNorm),
        Box::new(fold::BatchNormToAffine),
        Box::new(fold::FoldAffineAfter),
        Box::new(fold::FoldAffineBefore),
        Box::new(pad::FoldPad),
        Box::new(transpose::FoldTranspose),
        Box::new(strides::HoistStrides),
        Box::new(factorize::Factorize),
        Box::new(factorize::FactorizeApprox),
        Box::new(fuse::FuseEpilogue),
        Box::new(fuse::FuseElementwise),
    ]
}

/// The passes of the `declutter` stage (-O1).
pub fn declutter_names() -> Vec<&'static str> {
    vec![
        // Before const-fold, which would turn the weights' DequantizeLinear into f32 weights
        // (it applies only with --precision int8).
        "fuse-qdq",
        "remove-identity",
        "const-fold",
        "dead-code",
        "cse",
        "decompose-einsum",
        "decompose-attention",
        "fold-batchnorm",
        "batchnorm-to-affine",
        "fold-affine",
        "fold-affine-before-conv",
        "fold-pad",
        "fold-transpose",
        "hoist-strides",
        "factorize",
    ]
}

/// The passes of the `lower` stage (added to declutter at -O2).
pub fn lower_names() -> Vec<&'static str> {
    vec!["fuse-epilogue", "fuse-elementwise", "dead-code"]
}
