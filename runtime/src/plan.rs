//! A compiled model as plain data: machine code, packed weights, the steps that call kernels, and
//! the arena size. Nothing here points into memory, so a plan can be saved and loaded elsewhere.

use crate::buffer::Weights;
use crate::tensor::DType;

/// Every kernel has this C ABI: `args` is the step's operand pointers, and the kernel computes
/// tiles `[begin, end)` of its iteration space. Tiles write disjoint outputs and never split a
/// reduction, so any split of the tiles across threads gives the same bits.
pub type KernelFn = unsafe extern "C" fn(args: *const *mut u8, begin: usize, end: usize);

/// Where an operand lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The per-run scratch arena.
    Arena,
    /// The packed weights.
    Weights,
    /// Graph input k.
    Input(usize),
    /// Graph output k.
    Output(usize),
    /// The runtime's helper function table.
    Helpers,
    /// The entry of kernel k's machine code, for kernels that call another one (the wide tier's
    /// loop nests call their register-tile microkernel).
    Kernel(usize),
}

/// An operand pointer: a slot's base address plus a byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    pub slot: Slot,
    pub offset: usize,
}

/// One kernel call.
#[derive(Clone, Debug)]
pub struct Step {
    pub kernel: usize,
    pub operands: Vec<Operand>,
    /// Size of the iteration space in tiles.
    pub tiles: usize,
    /// The graph node it comes from, and its op (for profiles and errors).
    pub name: String,
    pub op: String,
    /// Floating point operations of one run (2 per multiply-add), for GFLOP/s in profiles.
    pub flops: u64,
    /// A kernel that validates its data (e.g. Gather's indices) sets the plan's status word; this
    /// says what a nonzero status after this step means.
    pub check: Option<String>,
}

/// A kernel's machine code within [`Plan::code`].
#[derive(Clone, Debug)]
pub struct Kernel {
    pub offset: usize,
    pub len: usize,
    /// A readable description of what the kernel was specialised for.
    pub name: String,
}

/// The name, dtype and shape of a graph input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct IoSpec {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl IoSpec {
    /// The size of a buffer holding this tensor (validated plans never overflow it).
    pub fn byte_size(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.size()
    }
}

/// A complete compiled model.
#[derive(Clone, Debug)]
pub struct Plan {
    pub code: Vec<u8>,
    pub kernels: Vec<Kernel>,
    pub steps: Vec<Step>,
    pub weights: Weights,
    pub arena_size: usize,
    /// Arena offset of the i64 status word that checking kernels set (zeroed before each run).
    pub status: Option<usize>,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    /// CPU features the machine code needs beyond the architecture's baseline (`avx2`, `fma`).
    pub features: Vec<String>,
}

impl Plan {
    /// Checks that every reference stays in bounds (a corrupt plan must fail to load, not crash).
    pub fn validate(&self) -> Result<(), String> {
        for (i, k) in self.kernels.iter().enumerate() {
            if k.offset.checked_add(k.len).is_none_or(|e| e > self.code.len()) || k.len == 0 {
                return Err(format!("kernel {i} ({}) lies outside the code", k.name));
            }
        }
        if self.status.is_some_and(|o| o % 8 != 0 || o.checked_add(8).is_none_or(|e| e > self.arena_size)) {
            return Err("the status word lies outside the arena".into());
        }
        for s in &self.steps {
            if s.check.is_some() && self.status.is_none() {
                return Err(format!("step '{}' checks its data but the plan has no status word", s.name));
            }
            if s.kernel >= self.kernels.len() {
                return Err(format!("step '{}' calls kernel {} of {}", s.name, s.kernel, self.kernels.len()));
            }
            for o in &s.operands {
                let ok = match o.slot {
                    Slot::Arena => o.offset <= self.arena_size,
                    Slot::Weights => o.offset <= self.weights.len(),
                    Slot::Input(k) => k < self.inputs.len(),
                    Slot::Output(k) => k < self.outputs.len(),
                    Slot::Helpers => o.offset == 0,
                    Slot::Kernel(k) => o.offset == 0 && k < self.kernels.len(),
                };
                if !ok {
                    return Err(format!("step '{}' has an operand out of range: {o:?}", s.name));
                }
            }
        }
        Ok(())
    }
}
