//! Running a plan: input validation, an arena per concurrent run, and the steps' tiles spread
//! over a thread pool.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::buffer::AlignedBuf;
use crate::code::ExecutableCode;
use crate::error::RunError;
use crate::helpers;
use crate::plan::{KernelFn, Operand, Plan, Slot};
use crate::tensor::{DType, Tensor, TensorMut, TensorRef};

/// How to run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Worker threads; 0 means the number of physical cores. 1 runs everything inline. At most
    /// [`RunOptions::max_threads`].
    pub threads: usize,
}

impl RunOptions {
    /// The most worker threads a model takes: four per logical CPU, and never more than 1024. More
    /// only adds scheduling and memory (each thread has its own stack), and a mistyped count
    /// would otherwise start thousands of threads.
    pub fn max_threads() -> usize {
        (4 * num_cpus::get()).clamp(4, 1024)
    }

    /// The worker threads these options ask for (0: the physical cores), or the error that
    /// names the limit.
    pub fn worker_threads(&self) -> Result<usize, RunError> {
        let limit = RunOptions::max_threads();
        match self.threads {
            0 => Ok(num_cpus::get_physical().clamp(1, limit)),
            n if n > limit => Err(RunError::Threads { requested: n, limit, cpus: num_cpus::get() }),
            n => Ok(n),
        }
    }
}

/// A copy of some bytes of a run's memory, taken right after a step (for debugging tools that
/// compare intermediate values, such as `incept check`): `bytes` bytes at `at`, read once step
/// `after_step` has finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub after_step: usize,
    pub at: Operand,
    pub bytes: usize,
}

/// One chunk of a step's tiles as one worker ran it (`bench --trace`): times from the start of
/// the run.
#[derive(Clone, Debug)]
pub struct TraceEvent {
    pub step: usize,
    pub tiles: (usize, usize),
    /// The pool worker (0 when the model runs inline).
    pub thread: usize,
    pub start: Duration,
    pub duration: Duration,
}

/// Where a traced run collects its events.
struct Tracer {
    start: Instant,
    events: Mutex<Vec<TraceEvent>>,
}

/// Time spent in one step of one run.
#[derive(Clone, Debug)]
pub struct StepTiming {
    pub step: usize,
    pub time: Duration,
}

/// A compiled model, ready to run. `run` takes `&self` and may be called from several threads at
/// once: each call takes its own arena from a pool.
pub struct Model {
    plan: Plan,
    // Keeps the executable mapping alive for as long as `kernels` may be called.
    _code: ExecutableCode,
    kernels: Vec<KernelFn>,
    pool: Option<crate::pool::Pool>,
    threads: usize,
    /// The code uses AMX tiles (see `signal.rs`).
    amx: bool,
    scratch: Mutex<Vec<Scratch>>,
    helpers: Box<[usize; helpers::COUNT]>,
    output_names: Arc<[String]>,
}

/// What a run returns: the outputs in the model's order (it derefs to `[Tensor]`), also
/// addressable by name.
#[derive(Clone, Debug)]
pub struct Outputs {
    names: Arc<[String]>,
    tensors: Vec<Tensor>,
}

impl Outputs {
    /// The output called `name`; the error lists the model's output names.
    pub fn get(&self, name: &str) -> Result<&Tensor, RunError> {
        match self.names.iter().position(|n| n == name) {
            Some(k) => Ok(&self.tensors[k]),
            None => Err(RunError::UnknownOutput { name: name.to_string(), names: self.names.join(", ") }),
        }
    }

    /// Takes the output called `name` out of the list, without copying it.
    pub fn take(self, name: &str) -> Result<Tensor, RunError> {
        match self.names.iter().position(|n| n == name) {
            Some(k) => {
                let mut tensors = self.tensors;
                Ok(tensors.swap_remove(k))
            }
            None => Err(RunError::UnknownOutput { name: name.to_string(), names: self.names.join(", ") }),
        }
    }

    /// The output names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// (name, tensor) pairs in the model's order.
    pub fn iter_named(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(String::as_str).zip(&self.tensors)
    }

    pub fn into_vec(self) -> Vec<Tensor> {
        self.tensors
    }
}

impl std::ops::Deref for Outputs {
    type Target = [Tensor];
    fn deref(&self) -> &[Tensor] {
        &self.tensors
    }
}

impl std::ops::DerefMut for Outputs {
    fn deref_mut(&mut self) -> &mut [Tensor] {
        &mut self.tensors
    }
}

impl IntoIterator for Outputs {
    type Item = Tensor;
    type IntoIter = std::vec::IntoIter<Tensor>;
    fn into_iter(self) -> Self::IntoIter {
        self.tensors.into_iter()
    }
}

impl<'a> IntoIterator for &'a Outputs {
    type Item = &'a Tensor;
    type IntoIter = std::slice::Iter<'a, Tensor>;
    fn into_iter(self) -> Self::IntoIter {
        self.tensors.iter()
    }
}

/// Operand pointers of one step (or the slot bases of one run), shared read-only by the threads
/// that run the tiles.
struct Args<'a>(&'a [*mut u8]);
// SAFETY: the pointers refer to buffers that outlive the step, and tiles write disjoint parts.
unsafe impl Sync for Args<'_> {}
unsafe impl Send for Args<'_> {}

impl Args<'_> {
    fn as_ptr(&self) -> *const *mut u8 {
        self.0.as_ptr()
    }
}

/// A reusable list of pointers (slot bases, or one step's operands).
struct Ptrs(Vec<*mut u8>);
// SAFETY: the pointers are only dereferenced by kernels during the run that wrote them; the list
// moves between threads only with its scratch, owned by one run at a time.
unsafe impl Send for Ptrs {}

impl Ptrs {
    /// Replaces the list's contents, keeping its allocation.
    fn refill(&mut self, pointers: impl Iterator<Item = *mut u8>) -> &[*mut u8] {
        self.0.clear();
        self.0.extend(pointers);
        &self.0
    }
}

/// What one run needs besides its inputs and outputs, kept in a pool between runs so that a run
/// allocates nothing: the arena, and room for the slot bases and one step's operand pointers.
struct Scratch {
    arena: AlignedBuf,
    bases: Ptrs,
    args: Ptrs,
}

impl Model {
    /// Loads a plan: validates it, maps its code executable and starts the thread pool.
    pub fn new(plan: Plan, options: &RunOptions) -> Result<Model, RunError> {
        let threads = options.worker_threads()?;
        plan.validate().map_err(RunError::Plan)?;
        let missing: Vec<String> = plan.features.iter().filter(|f| !crate::cpu::has_feature(f)).cloned().collect();
        if !missing.is_empty() {
            return Err(crate::cpu::missing_error(&missing));
        }
        let code = ExecutableCode::new(&plan.code)?;
        let kernels = plan
            .kernels
            .iter()
            .map(|k| {
                let addr = code
                    .address(k.offset)
                    .ok_or_else(|| RunError::Plan(format!("kernel {} is outside the code", k.name)))?;
                // SAFETY: the plan's code holds a function with the kernel ABI at this offset
                // (the compiler emitted it so); validate() checked the bounds.
                Ok(unsafe { std::mem::transmute::<*const u8, KernelFn>(addr) })
            })
            .collect::<Result<Vec<_>, RunError>>()?;
        // AMX code needs room for the tile state in signal frames on every thread that runs it.
        let amx = plan.features.iter().any(|f| f == "amx-tile");
        let pool = if threads > 1 {
            let on_start: fn() = if amx { crate::signal::ensure_signal_stack } else { || {} };
            Some(
                crate::pool::Pool::new(threads, on_start)
                    .map_err(|e| RunError::Plan(format!("cannot start threads: {e}")))?,
            )
        } else {
            None
        };
        let output_names = plan.outputs.iter().map(|o| o.name.clone()).collect();
        Ok(Model {
            output_names,
            plan,
            _code: code,
            kernels,
            pool,
            threads,
            amx,
            scratch: Mutex::new(vec![]),
            helpers: Box::new(helpers::table()),
        })
    }

    /// Loads a compiled model from an `.incept` artifact (see [`crate::artifact`]): checks its
    /// header, digest, tables and CPU features, then maps its code executable. An artifact is
    /// native code: load only files you trust.
    pub fn load(path: impl AsRef<std::path::Path>, options: &RunOptions) -> Result<Model, RunError> {
        Model::load_with(path, options, &Default::default())
    }

    /// [`Model::load`] under a loader's demands: with `load.trusted_keys` set, only an artifact
    /// signed by one of those keys loads (see [`crate::signature`]).
    pub fn load_with(
        path: impl AsRef<std::path::Path>,
        options: &RunOptions,
        load: &crate::artifact::LoadOptions,
    ) -> Result<Model, RunError> {
        // A bad thread count is refused before the file is read.
        options.worker_threads()?;
        let (plan, _) = crate::artifact::load_with(path.as_ref(), load)?;
        Model::new(plan, options)
    }

    /// Writes this model's plan as an `.incept` artifact.
    pub fn save(
        &self,
        path: impl AsRef<std::path::Path>,
        info: &crate::artifact::ArtifactInfo,
    ) -> Result<(), RunError> {
        Ok(crate::artifact::save(&self.plan, info, path.as_ref())?)
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Fills the arena the next run uses with `byte` (0xFF: every float NaN) instead of what
    /// earlier runs left. A test hook: a kernel that reads arena bytes no step wrote (a missed
    /// zero fill, a border it should have skipped) then shows as NaN in the outputs.
    #[doc(hidden)]
    pub fn fill_arena_for_testing(&self, byte: u8) {
        if let Ok(mut pool) = self.scratch.lock() {
            if pool.is_empty() {
                pool.push(self.new_scratch());
            }
            for s in pool.iter_mut() {
                s.arena.as_mut_slice().fill(byte);
            }
        }
    }

    /// Runs the model on inputs given in the model's input order.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Outputs, RunError> {
        let refs: Vec<&Tensor> = inputs.iter().collect();
        self.run_tensors(&refs, None, None, None)
    }

    /// Runs the model on caller-owned buffers: inputs are read in place and the outputs written
    /// into `outputs` (in the model's output order, each of its exact dtype and shape), so a
    /// serving loop allocates nothing per run: after a model's first run, a call makes no heap
    /// allocation at all on the calling thread, with or without helper threads (tested). Buffers of any alignment work.
    pub fn run_into(&self, inputs: &[TensorRef<'_>], outputs: &mut [TensorMut<'_>]) -> Result<(), RunError> {
        self.check_inputs(inputs.iter().map(|t| (t.dtype(), t.shape())))?;
        let specs = &self.plan.outputs;
        if outputs.len() != specs.len() {
            return Err(RunError::OutputCount {
                expected: specs.len(),
                got: outputs.len(),
                names: self.output_names.join(", "),
            });
        }
        for (t, s) in outputs.iter().zip(specs) {
            if t.dtype() != s.dtype || t.shape() != s.shape.as_slice() {
                return Err(RunError::Output {
                    name: s.name.clone(),
                    expected: spec_string(s.dtype, &s.shape),
                    got: t.type_string(),
                });
            }
        }
        self.run_inner(
            |bases| {
                bases.extend(inputs.iter().map(|t| t.bytes().as_ptr() as *mut u8));
                bases.extend(outputs.iter_mut().map(|t| t.as_mut_ptr()));
            },
            None,
            None,
            None,
        )
    }

    /// Runs the model and copies out the bytes each probe asks for (probes that point outside
    /// their slot are refused before anything runs).
    pub fn run_probed(&self, inputs: &[Tensor], probes: &[Probe]) -> Result<(Outputs, Vec<Vec<u8>>), RunError> {
        for p in probes {
            let size = match p.at.slot {
                Slot::Arena => Some(self.plan.arena_size),
                Slot::Weights => Some(self.plan.weights.len()),
                Slot::Input(k) => inputs.get(k).map(|t| t.bytes().len()),
                Slot::Output(k) => self.plan.outputs.get(k).map(|o| o.shape.iter().product::<usize>() * o.dtype.size()),
                Slot::Helpers | Slot::Kernel(_) => None,
            };
            let fits = size.is_some_and(|n| p.at.offset.checked_add(p.bytes).is_some_and(|e| e <= n));
            if !fits || p.after_step >= self.plan.steps.len() {
                return Err(RunError::Plan(format!("probe outside the plan: {p:?}")));
            }
        }
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let mut taken = vec![vec![]; probes.len()];
        let out = self.run_tensors(&refs, None, Some((probes, &mut taken)), None)?;
        Ok((out, taken))
    }

    /// Runs the model on inputs given by name (each input exactly once).
    pub fn run_named(&self, inputs: &[(&str, &Tensor)]) -> Result<Outputs, RunError> {
        let names = || self.plan.inputs.iter().map(|i| i.name.clone()).collect::<Vec<_>>().join(", ");
        for (k, (n, _)) in inputs.iter().enumerate() {
            if !self.plan.inputs.iter().any(|i| i.name == *n) {
                return Err(RunError::UnknownInput { name: n.to_string(), names: names() });
            }
            if inputs[..k].iter().any(|(m, _)| m == n) {
                return Err(RunError::DuplicateInput { name: n.to_string() });
            }
        }
        let mut ordered = vec![];
        for spec in &self.plan.inputs {
            match inputs.iter().find(|(n, _)| *n == spec.name) {
                Some((_, t)) => ordered.push(*t),
                None => return Err(RunError::MissingInput { name: spec.name.clone(), names: names() }),
            }
        }
        self.run_tensors(&ordered, None, None, None)
    }

    /// Runs the model and reports the time of every step.
    pub fn run_timed(&self, inputs: &[Tensor]) -> Result<(Outputs, Vec<StepTiming>), RunError> {
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let mut timings = Vec::with_capacity(self.plan.steps.len());
        let out = self.run_tensors(&refs, Some(&mut timings), None, None)?;
        Ok((out, timings))
    }

    /// Runs the model and records every chunk of every step's tiles: which worker ran it, when,
    /// and for how long.
    pub fn run_traced(&self, inputs: &[Tensor]) -> Result<(Outputs, Vec<TraceEvent>), RunError> {
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let tracer = Tracer { start: Instant::now(), events: Mutex::new(vec![]) };
        let out = self.run_tensors(&refs, None, None, Some(&tracer))?;
        let mut events = tracer.events.into_inner().unwrap_or_default();
        events.sort_by_key(|e| (e.start, e.thread));
        Ok((out, events))
    }

    fn check_inputs<'s>(&self, inputs: impl ExactSizeIterator<Item = (DType, &'s [usize])>) -> Result<(), RunError> {
        let specs = &self.plan.inputs;
        if inputs.len() != specs.len() {
            let names = specs.iter().map(|i| i.name.clone()).collect::<Vec<_>>().join(", ");
            return Err(RunError::InputCount { expected: specs.len(), got: inputs.len(), names });
        }
        for ((dtype, shape), s) in inputs.zip(specs) {
            if dtype != s.dtype || shape != s.shape.as_slice() {
                // A batch mismatch is the common case: say what the model was compiled for.
                let batch = if dtype == s.dtype
                    && shape.len() == s.shape.len()
                    && !shape.is_empty()
                    && shape[1..] == s.shape[1..]
                {
                    format!(
                        " (the model was compiled for batch size {}; compile it again for batch {})",
                        s.shape[0], shape[0]
                    )
                } else {
                    String::new()
                };
                return Err(RunError::Input {
                    name: s.name.clone(),
                    expected: spec_string(s.dtype, &s.shape),
                    got: format!("{}{batch}", spec_string(dtype, shape)),
                });
            }
        }
        Ok(())
    }

    /// Checks the inputs, allocates the outputs and runs.
    fn run_tensors(
        &self,
        inputs: &[&Tensor],
        timings: Option<&mut Vec<StepTiming>>,
        probes: Option<(&[Probe], &mut Vec<Vec<u8>>)>,
        tracer: Option<&Tracer>,
    ) -> Result<Outputs, RunError> {
        self.check_inputs(inputs.iter().map(|t| (t.dtype(), t.shape())))?;
        let mut outputs: Vec<Tensor> = self.plan.outputs.iter().map(|o| Tensor::zeros(o.dtype, &o.shape)).collect();
        self.run_inner(
            |bases| {
                bases.extend(inputs.iter().map(|t| t.as_ptr() as *mut u8));
                bases.extend(outputs.iter_mut().map(|t| t.bytes_mut().as_mut_ptr()));
            },
            timings,
            probes,
            tracer,
        )?;
        Ok(Outputs { names: self.output_names.clone(), tensors: outputs })
    }

    fn new_scratch(&self) -> Scratch {
        let max_operands = self.plan.steps.iter().map(|s| s.operands.len()).max().unwrap_or(0);
        Scratch {
            arena: AlignedBuf::zeroed(self.plan.arena_size),
            bases: Ptrs(Vec::with_capacity(3 + self.plan.inputs.len() + self.plan.outputs.len())),
            args: Ptrs(Vec::with_capacity(max_operands)),
        }
    }

    /// Runs the steps on checked input and output buffers: `io` appends one pointer per model
    /// input, then one per output, each to a buffer of its spec's size.
    fn run_inner(
        &self,
        io: impl FnOnce(&mut Vec<*mut u8>),
        mut timings: Option<&mut Vec<StepTiming>>,
        mut probes: Option<(&[Probe], &mut Vec<Vec<u8>>)>,
        tracer: Option<&Tracer>,
    ) -> Result<(), RunError> {
        let mut scratch = self.scratch.lock().ok().and_then(|mut a| a.pop()).unwrap_or_else(|| self.new_scratch());
        let Scratch { arena, bases, args } = &mut scratch;
        if let Some(off) = self.plan.status {
            arena.as_mut_slice()[off..off + 8].fill(0);
        }
        let result = {
            // Slot bases: arena, weights, helpers, then inputs and outputs.
            let bases = &mut bases.0;
            bases.clear();
            bases.extend([arena.as_mut_ptr(), self.plan.weights.as_ptr() as *mut u8, self.helpers.as_ptr() as *mut u8]);
            io(bases);
            let n_in = self.plan.inputs.len();
            let bases = Args(bases);
            // Only the thread running the steps touches the list; the tiles see `Args`.
            let args: &mut Ptrs = args;
            let session = self.pool.as_ref().and_then(|p| p.session());
            let mut steps = || -> Result<(), RunError> {
                let bases = &bases;
                let status = self.plan.status.map(|o| bases.0[0].wrapping_add(o) as *const i64);
                for (i, step) in self.plan.steps.iter().enumerate() {
                    let operands = args.refill(step.operands.iter().map(|o| {
                        let base = match o.slot {
                            Slot::Arena => bases.0[0],
                            Slot::Weights => bases.0[1],
                            Slot::Helpers => bases.0[2],
                            Slot::Input(k) => bases.0[3 + k],
                            Slot::Output(k) => bases.0[3 + n_in + k],
                            Slot::Kernel(k) => self.kernels[k] as *mut u8,
                        };
                        base.wrapping_add(o.offset)
                    }));
                    let start = timings.is_some().then(Instant::now);
                    let pool = session.as_ref();
                    self.call(pool, self.kernels[step.kernel], &Args(operands), step.tiles, tracer.map(|t| (t, i)));
                    if let (Some(t), Some(start)) = (timings.as_deref_mut(), start) {
                        t.push(StepTiming { step: i, time: start.elapsed() });
                    }
                    if let Some((list, taken)) = probes.as_mut() {
                        for (p, out) in list.iter().zip(taken.iter_mut()).filter(|(p, _)| p.after_step == i) {
                            let base = match p.at.slot {
                                Slot::Arena => bases.0[0],
                                Slot::Weights => bases.0[1],
                                Slot::Input(k) => bases.0[3 + k],
                                Slot::Output(k) => bases.0[3 + n_in + k],
                                Slot::Helpers | Slot::Kernel(_) => continue,
                            };
                            // SAFETY: run_probed checked that the bytes lie inside the slot's
                            // buffer, and every tile of the step has finished.
                            let src = unsafe { std::slice::from_raw_parts(base.wrapping_add(p.at.offset), p.bytes) };
                            *out = src.to_vec();
                        }
                    }
                    if let (Some(what), Some(status)) = (&step.check, status) {
                        // SAFETY: the status word is 8 aligned bytes inside the arena (validated),
                        // and every tile of the step has finished writing it.
                        if unsafe { status.read_volatile() } != 0 {
                            return Err(RunError::Check {
                                name: step.name.clone(),
                                op: step.op.clone(),
                                what: what.clone(),
                            });
                        }
                    }
                }
                Ok(())
            };
            // The caller runs the steps and forks each one's tiles to the pool's helpers (when
            // no other run holds them: that run's caller then works alone).
            if self.amx {
                crate::signal::ensure_signal_stack();
            }
            steps()
        };
        if let Ok(mut pool) = self.scratch.lock() {
            pool.push(scratch);
        }
        result
    }

    /// Calls a kernel over `tiles` tiles: inline, or in contiguous chunks on the pool.
    fn call(
        &self,
        pool: Option<&crate::pool::Session>,
        f: KernelFn,
        args: &Args,
        tiles: usize,
        trace: Option<(&Tracer, usize)>,
    ) {
        let run = |lo: usize, hi: usize, thread: usize| {
            let t0 = trace.map(|_| Instant::now());
            // SAFETY: the operands were laid out by the compiler for exactly this kernel, point
            // into live buffers of the right sizes (checked when the plan was validated and the
            // inputs checked), and the tile range is within the kernel's iteration space.
            unsafe { f(args.as_ptr(), lo, hi) }
            if let (Some((tracer, step)), Some(t0)) = (trace, t0) {
                let event = TraceEvent {
                    step,
                    tiles: (lo, hi),
                    thread,
                    start: t0.duration_since(tracer.start),
                    duration: t0.elapsed(),
                };
                if let Ok(mut e) = tracer.events.lock() {
                    e.push(event);
                }
            }
        };
        match pool {
            Some(pool) if tiles > 1 => {
                let chunks = tiles.min(self.threads * 4);
                pool.run(chunks, &|c, thread| run(c * tiles / chunks, (c + 1) * tiles / chunks, thread));
            }
            _ => run(0, tiles, 0),
        }
    }
}

/// "f32[1,3,224,224]"
fn spec_string(dtype: DType, shape: &[usize]) -> String {
    format!("{dtype}[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_are_bounded() {
        let limit = RunOptions::max_threads();
        assert!((4..=1024).contains(&limit));
        assert_eq!(RunOptions { threads: limit }.worker_threads().unwrap(), limit);
        assert_eq!(RunOptions { threads: 1 }.worker_threads().unwrap(), 1);
        assert!(RunOptions { threads: 0 }.worker_threads().unwrap() >= 1);
        for n in [limit + 1, 100_000, usize::MAX] {
            let err = RunOptions { threads: n }.worker_threads().unwrap_err();
            assert!(matches!(err, RunError::Threads { requested, .. } if requested == n), "{err}");
        }
        // Refused before the file is read: a missing file still reports the thread count.
        let err = Model::load("/nonexistent.incept", &RunOptions { threads: usize::MAX }).err().expect("refused");
        assert!(matches!(err, RunError::Threads { .. }), "{err}");
    }
}
