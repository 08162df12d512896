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

impl Slot {
    /// The slot as (kind, index): how artifacts store it and the seal hashes it.
    pub fn code(self) -> (u8, usize) {
        match self {
            Slot::Arena => (0, 0),
            Slot::Weights => (1, 0),
            Slot::Input(k) => (2, k),
            Slot::Output(k) => (3, k),
            Slot::Helpers => (4, 0),
            Slot::Kernel(k) => (5, k),
        }
    }

    /// The slot of a (kind, index) pair, if the kind is one.
    pub fn from_code(kind: u8, index: usize) -> Option<Slot> {
        Some(match kind {
            0 => Slot::Arena,
            1 => Slot::Weights,
            2 => Slot::Input(index),
            3 => Slot::Output(index),
            4 => Slot::Helpers,
            5 => Slot::Kernel(index),
            _ => return None,
        })
    }
}

/// An operand pointer: a slot's base address plus a byte offset, and what the kernel does
/// through it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    pub slot: Slot,
    pub offset: usize,
    /// Bytes from `offset` that the kernel may touch over its whole iteration space (the rest of
    /// the buffer the compiler gave it); 0 for the helper table and called kernels.
    pub extent: usize,
    /// Whether the kernel writes through it.
    pub writes: bool,
}

impl Operand {
    /// An operand that is not a buffer (the helper table, a called kernel).
    pub fn entry(slot: Slot) -> Operand {
        Operand { slot, offset: 0, extent: 0, writes: false }
    }
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
    /// The tiles of its iteration space, which every step calling it covers.
    pub tiles: usize,
    /// What its code assumes of each operand pointer a step passes it, in order; none for a
    /// microkernel, which only other kernels call (and no step may).
    pub operands: Vec<Need>,
    /// The microkernels its code calls, in the order its steps pass their entries.
    pub calls: Vec<usize>,
}

/// What a kernel's code assumes of the operand at one position: how many bytes from the pointer
/// it may touch (over all its tiles) and whether it writes through it. 0 and false for the
/// helper table and called kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    pub extent: usize,
    pub writes: bool,
    /// The code reads constant data there (weights, or tables it addresses memory through, such
    /// as Winograd tile positions and resampling taps): the operand must lie in the weights,
    /// whose bytes the artifact's digest (and signature) vouch for.
    pub constant: bool,
    /// The code calls through it: the helper table or a microkernel, never data.
    pub entry: bool,
}

/// Where each kernel's code starts: the first multiple of this after the previous kernel's end.
pub const KERNEL_ALIGN: usize = 64;

/// The most bytes an arena may hold beyond the last byte a kernel touches (the compiler's slack
/// for kernels that read a little past their buffer, see the compiler's `ARENA_OVERREAD`).
pub const MAX_ARENA_SLACK: usize = 4096;

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
    /// The compiler's seal on everything above but the weights' contents (see
    /// [`Plan::fingerprint`]): a table edited after compiling no longer matches it.
    pub seal: [u8; 32],
}

impl Plan {
    /// A BLAKE3 hash of the code, every table, the sizes and the weights' length: what the
    /// compiler vouches for when it seals a plan. (The weights' bytes are left out: hashing them
    /// again at every load would double its cost, and an artifact's digest covers them.)
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        let n = |h: &mut blake3::Hasher, v: usize| {
            h.update(&(v as u64).to_le_bytes());
        };
        let s = |h: &mut blake3::Hasher, v: &str| {
            n(h, v.len());
            h.update(v.as_bytes());
        };
        n(&mut h, self.code.len());
        h.update(&self.code);
        n(&mut h, self.kernels.len());
        for k in &self.kernels {
            for v in
                [k.offset, k.len, k.tiles, k.operands.len(), k.calls.len()].into_iter().chain(k.calls.iter().copied())
            {
                n(&mut h, v);
            }
            for need in &k.operands {
                n(&mut h, need.extent);
                n(&mut h, need.writes as usize);
                n(&mut h, need.constant as usize);
                n(&mut h, need.entry as usize);
            }
            s(&mut h, &k.name);
        }
        n(&mut h, self.steps.len());
        for st in &self.steps {
            for v in [st.kernel, st.tiles, st.flops as usize, st.operands.len()] {
                n(&mut h, v);
            }
            s(&mut h, &st.name);
            s(&mut h, &st.op);
            s(&mut h, st.check.as_deref().unwrap_or(""));
            n(&mut h, st.check.is_some() as usize);
            for o in &st.operands {
                let (code, index) = o.slot.code();
                for v in [code as usize, index, o.offset, o.extent, o.writes as usize] {
                    n(&mut h, v);
                }
            }
        }
        for list in [&self.inputs, &self.outputs] {
            n(&mut h, list.len());
            for io in list {
                s(&mut h, &io.name);
                s(&mut h, io.dtype.name());
                n(&mut h, io.shape.len());
                for &d in &io.shape {
                    n(&mut h, d);
                }
            }
        }
        for v in [self.weights.len(), self.arena_size, self.status.map_or(0, |o| o + 1), self.features.len()] {
            n(&mut h, v);
        }
        for f in &self.features {
            s(&mut h, f);
        }
        *h.finalize().as_bytes()
    }

    /// Seals the plan as it is now (the compiler does this last).
    pub fn seal(&mut self) {
        self.seal = self.fingerprint();
    }

    /// Checks every table against what the code assumes, before any code is mapped or any
    /// memory sized by the tables is allocated: kernels laid out back to back in the code; every
    /// step calling a kernel over its own tile count with its own operand count; every operand
    /// inside its slot over the whole extent the kernel touches, writing only to the arena or an
    /// output; every input and output read or written exactly over its size; every output fully
    /// written; the arena no larger than what the steps touch (plus a little slack); and the
    /// compiler's seal still matching. All with checked arithmetic: a corrupt plan must fail to
    /// load, never crash, abort or compute something else. (The artifact's digest catches
    /// corruption of the file; these checks catch tables that disagree with their code or were
    /// edited after compiling.)
    pub fn validate(&self) -> Result<(), String> {
        let mut end = 0usize;
        for (i, k) in self.kernels.iter().enumerate() {
            let start = end.checked_next_multiple_of(KERNEL_ALIGN).ok_or("the kernel layout overflows")?;
            if k.offset != start || k.len == 0 {
                return Err(format!("kernel {i} ({}) is not where the previous one ends", k.name));
            }
            end = k
                .offset
                .checked_add(k.len)
                .filter(|&e| e <= self.code.len())
                .ok_or_else(|| format!("kernel {i} ({}) lies outside the code", k.name))?;
        }
        if end != self.code.len() {
            return Err(format!("the code holds {} bytes past its last kernel", self.code.len() - end));
        }
        let io_bytes = |list: &[IoSpec], what: &str| -> Result<Vec<usize>, String> {
            list.iter()
                .map(|s| {
                    s.shape
                        .iter()
                        .try_fold(s.dtype.size(), |acc, &d| acc.checked_mul(d))
                        .filter(|&b| b <= isize::MAX as usize)
                        .ok_or_else(|| format!("{what} '{}' of shape {:?} is too large", s.name, s.shape))
                })
                .collect()
        };
        let (in_bytes, out_bytes) = (io_bytes(&self.inputs, "input")?, io_bytes(&self.outputs, "output")?);
        if self.status.is_some_and(|o| o % 8 != 0 || o.checked_add(8).is_none_or(|e| e > self.arena_size)) {
            return Err("the status word lies outside the arena".into());
        }
        let mut arena_end = self.status.map_or(0, |o| o + 8);
        let mut written = vec![false; self.outputs.len()];
        for s in &self.steps {
            let step = |what: String| format!("step '{}' ({}): {what}", s.name, s.op);
            if s.check.is_some() && self.status.is_none() {
                return Err(step("it checks its data but the plan has no status word".into()));
            }
            let k = self
                .kernels
                .get(s.kernel)
                .ok_or_else(|| step(format!("calls kernel {} of {}", s.kernel, self.kernels.len())))?;
            if s.tiles != k.tiles {
                return Err(step(format!(
                    "covers {} tiles of kernel {} ({}), which has {}",
                    s.tiles, s.kernel, k.name, k.tiles
                )));
            }
            if k.operands.is_empty() || s.operands.len() != k.operands.len() {
                return Err(step(format!(
                    "passes {} operands to kernel {} ({}), which takes {}",
                    s.operands.len(),
                    s.kernel,
                    k.name,
                    k.operands.len()
                )));
            }
            // Each operand as the code at its position assumes: the same direction, and at least
            // the bytes it touches.
            let fits = |o: &Operand, n: &Need| {
                let entry = matches!(o.slot, Slot::Helpers | Slot::Kernel(_));
                entry == n.entry
                    && o.writes == n.writes
                    && o.extent >= n.extent
                    && (!n.constant || o.slot == Slot::Weights)
            };
            if let Some(i) = (0..s.operands.len()).find(|&i| !fits(&s.operands[i], &k.operands[i])) {
                return Err(step(format!(
                    "operand {i} ({:?}) is not what kernel {} ({}) takes there ({:?})",
                    s.operands[i], s.kernel, k.name, k.operands[i]
                )));
            }
            // The microkernels passed are the ones the kernel's code was built to call.
            let calls = s.operands.iter().filter_map(|o| match o.slot {
                Slot::Kernel(i) => Some(i),
                _ => None,
            });
            if !calls.eq(k.calls.iter().copied()) {
                return Err(step(format!("passes other microkernels than kernel {} ({}) calls", s.kernel, k.name)));
            }
            for o in &s.operands {
                let bad = || step(format!("has an operand out of range: {o:?}"));
                let end = o.offset.checked_add(o.extent).ok_or_else(bad)?;
                let ok = match o.slot {
                    Slot::Arena => {
                        arena_end = arena_end.max(end);
                        end <= self.arena_size
                    }
                    Slot::Weights => end <= self.weights.len() && !o.writes,
                    Slot::Input(i) => in_bytes.get(i).is_some_and(|&b| end == b) && !o.writes,
                    Slot::Output(i) => {
                        let fits = out_bytes.get(i).is_some_and(|&b| end == b);
                        if fits && o.writes && o.offset == 0 {
                            written[i] = true;
                        }
                        fits
                    }
                    Slot::Helpers => o.offset == 0 && o.extent == 0 && !o.writes,
                    Slot::Kernel(i) => {
                        o.offset == 0
                            && o.extent == 0
                            && !o.writes
                            && self.kernels.get(i).is_some_and(|m| m.operands.is_empty())
                    }
                };
                if !ok {
                    return Err(bad());
                }
            }
        }
        if let Some(i) = (0..self.outputs.len()).find(|&i| !written[i] && out_bytes[i] > 0) {
            return Err(format!("no step writes output '{}' from its start", self.outputs[i].name));
        }
        if self.arena_size > arena_end.saturating_add(MAX_ARENA_SLACK) {
            return Err(format!("an arena of {} bytes where the steps touch {arena_end}", self.arena_size));
        }
        // Edits that keep every reference in bounds (an operand moved within its slot, two
        // operands or steps swapped) only the seal can tell.
        if self.seal != self.fingerprint() {
            return Err("its tables are not the ones the compiler sealed (edited after compiling?)".into());
        }
        Ok(())
    }
}
