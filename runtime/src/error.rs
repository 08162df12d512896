//! Errors of running a model: wrong inputs (with expected versus got), or a broken plan.

/// Why a run (or loading a plan) failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum RunError {
    #[error("the model takes {expected} input(s) ({names}), {got} given")]
    InputCount { expected: usize, got: usize, names: String },
    #[error("input '{name}': expected {expected}, got {got}")]
    Input { name: String, expected: String, got: String },
    #[error("no input named '{name}' (inputs: {names})")]
    UnknownInput { name: String, names: String },
    #[error("input '{name}' is given twice")]
    DuplicateInput { name: String },
    #[error("input '{name}' is not given (inputs: {names})")]
    MissingInput { name: String, names: String },
    #[error("no output named '{name}' (outputs: {names})")]
    UnknownOutput { name: String, names: String },
    #[error("the model has {expected} output(s) ({names}), {got} buffer(s) given")]
    OutputCount { expected: usize, got: usize, names: String },
    #[error("output '{name}': expected a buffer for {expected}, got {got}")]
    Output { name: String, expected: String, got: String },
    #[error(transparent)]
    Tensor(#[from] crate::tensor::TensorError),
    #[error("invalid plan: {0}")]
    Plan(String),
    #[error("cannot map executable code: {0}")]
    Code(String),
    #[error("this CPU lacks features the compiled code needs: {missing}{detail} ({hint})")]
    CpuFeatures {
        missing: String,
        /// Why a feature the CPU lists does not count (the OS withheld the AMX tile state).
        detail: String,
        /// How to compile for this CPU.
        hint: String,
    },
    #[error("node '{name}' ({op}): {what}")]
    Check { name: String, op: String, what: String },
    #[error(transparent)]
    Artifact(#[from] crate::artifact::ArtifactError),
    #[error(
        "{requested} worker threads asked for; at most {limit} (four per logical CPU, {cpus} here, and no more than 1024)"
    )]
    Threads { requested: usize, limit: usize, cpus: usize },
}
