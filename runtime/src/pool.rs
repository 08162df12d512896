//! The worker threads of a model with more than one thread: they spin between the steps of a
//! run and for a short while after it, then sleep.
//!
//! A run forks and joins once per step, and many steps take tens of microseconds. Helpers that
//! went to sleep between two steps (a general-purpose pool's idle policy) must be woken by the
//! kernel for each fork, which on a VM costs as much as a small step: DenseNet121 in bf16 spent
//! more time in its im2col, packing and elementwise steps at two threads than at one. Here the
//! caller runs the steps itself and the helpers wait for the next step spinning, as ONNX
//! Runtime's and OpenVINO's threads do by default; after [`SPIN`] without work they sleep until
//! the next run wakes them.
//!
//! Protocol: a step is a job of `chunks` chunks published by bumping `generation`; every thread
//! (caller included) claims chunks (its own segment first, see `claim`) until they run out; each helper then
//! acknowledges the generation, and the caller returns only when all have, so no helper can
//! still be reading a job when the next one is written, nor claim a chunk of it late.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a helper keeps spinning for the next step before it sleeps.
pub const SPIN: Duration = Duration::from_millis(2);

/// One chunk of a step: `(chunk, thread)`, thread 0 being the caller.
type Work = dyn Fn(usize, usize) + Sync;

struct Job {
    /// Valid from the bump of `generation` that publishes it until every helper acknowledged it.
    work: Option<*const Work>,
    chunks: usize,
}

/// A counter on a cache line of its own.
#[repr(align(128))]
struct Padded(AtomicUsize);

struct Shared {
    job: UnsafeCell<Job>,
    generation: AtomicU64,
    /// Per thread, the next chunk of its segment (see `claim`).
    next: Vec<Padded>,
    acks: AtomicUsize,
    /// A helper's work panicked (a bug: kernels do not unwind); the caller re-raises it.
    panicked: AtomicBool,
    stop: AtomicBool,
    sleepers: AtomicUsize,
    sleep: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the thread holding the pool's session, while no helper reads
// it (all acknowledged the previous generation), and read by helpers only between a generation
// bump and their acknowledgement; everything else is atomics and std sync types.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// Helper threads for one model.
pub struct Pool {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    busy: Mutex<()>,
}

impl Pool {
    /// Starts `threads - 1` helpers (the caller of each run is the first thread); `on_start`
    /// runs first on each (the AMX signal stack).
    pub fn new(threads: usize, on_start: fn()) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(Job { work: None, chunks: 0 }),
            generation: AtomicU64::new(0),
            next: (0..threads.max(1)).map(|_| Padded(AtomicUsize::new(0))).collect(),
            acks: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            sleep: Mutex::new(()),
            wake: Condvar::new(),
        });
        let mut helpers = vec![];
        for t in 1..threads.max(1) {
            let sh = shared.clone();
            let spawned = std::thread::Builder::new().name(format!("incept-{t}")).spawn(move || {
                on_start();
                helper(&sh, t)
            });
            match spawned {
                Ok(h) => helpers.push(h),
                Err(e) => {
                    stop(&shared, std::mem::take(&mut helpers));
                    return Err(e);
                }
            }
        }
        Ok(Pool { shared, helpers, busy: Mutex::new(()) })
    }

    /// The pool for one run, unless another run holds it (that run's caller then runs its steps
    /// on its own thread).
    pub fn session(&self) -> Option<Session<'_>> {
        let guard = match self.busy.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(Session { pool: self, _guard: guard })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        stop(&self.shared, std::mem::take(&mut self.helpers));
    }
}

fn stop(shared: &Shared, helpers: Vec<JoinHandle<()>>) {
    shared.stop.store(true, Ordering::SeqCst);
    {
        let _g = shared.sleep.lock().unwrap_or_else(|p| p.into_inner());
        shared.wake.notify_all();
    }
    for h in helpers {
        let _ = h.join();
    }
}

/// The pool held by one run.
pub struct Session<'a> {
    pool: &'a Pool,
    _guard: MutexGuard<'a, ()>,
}

impl Session<'_> {
    /// Runs `work(chunk, thread)` for every chunk in `0..chunks` on the caller and the helpers;
    /// returns when all are done.
    pub fn run(&self, chunks: usize, work: &(dyn Fn(usize, usize) + Sync)) {
        let sh = &*self.pool.shared;
        // SAFETY: the pointer is read by helpers only until they acknowledge this generation,
        // and this function waits for every acknowledgement before returning, so `work`
        // outlives every use. The lifetime is erased to store it.
        let work_ptr: *const Work =
            unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &'static Work>(work) };
        // SAFETY: every helper acknowledged the previous job (the wait below), so none reads
        // `job` now, and only the session holder writes it.
        unsafe { *sh.job.get() = Job { work: Some(work_ptr), chunks } };
        let threads = sh.next.len();
        for (t, n) in sh.next.iter().enumerate() {
            n.0.store(t * chunks / threads, Ordering::Relaxed);
        }
        sh.acks.store(0, Ordering::Relaxed);
        sh.generation.fetch_add(1, Ordering::SeqCst);
        if sh.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = sh.sleep.lock().unwrap_or_else(|p| p.into_inner());
            sh.wake.notify_all();
        }
        while let Some(c) = claim(sh, 0, chunks) {
            work(c, 0);
        }
        let helpers = self.pool.helpers.len();
        let mut polls = 0u32;
        while sh.acks.load(Ordering::Acquire) < helpers {
            pause(&mut polls);
        }
        if sh.panicked.load(Ordering::Relaxed) {
            panic!("a worker thread panicked while running a step");
        }
    }
}

/// Polls before a waiting thread yields its CPU at each poll: about 20 us of spinning.
const SPIN_POLLS: u32 = 2000;

/// One poll of a wait: a spin hint, and past `SPIN_POLLS` a yield, so that threads waiting on
/// a CPU that others need (more threads than CPUs, several models at once) give it up instead
/// of burning their time slices while the thread they wait for cannot run.
fn pause(polls: &mut u32) {
    *polls = polls.wrapping_add(1);
    if *polls > SPIN_POLLS {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

/// The next chunk for `thread`: from its own segment of the chunks (the t-th of as many equal
/// runs as threads) while it lasts, then from the others'. A thread thus takes the same part of
/// every step (the same output rows or columns, for most kernels) and mostly reads what it
/// wrote itself one step before: on a VM whose two vCPUs sat on different CCDs of an EPYC
/// (a cache line's round trip 380-430 ns instead of 80-120), ResNet50 in bf16 at two threads
/// ran 13-14 ms when chunks went to whichever thread came first, against 9.5 ms on one CCD.
/// Stealing what is left keeps a late thread from holding up the step.
fn claim(sh: &Shared, thread: usize, chunks: usize) -> Option<usize> {
    let threads = sh.next.len();
    for u in 0..threads {
        let s = (thread + u) % threads;
        let end = (s + 1) * chunks / threads;
        if sh.next[s].0.load(Ordering::Relaxed) >= end {
            continue;
        }
        let c = sh.next[s].0.fetch_add(1, Ordering::Relaxed);
        if c < end {
            return Some(c);
        }
    }
    None
}

fn helper(sh: &Shared, thread: usize) {
    let mut seen = 0u64;
    loop {
        let mut idle = Instant::now();
        let mut polls = 0u32;
        loop {
            let g = sh.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            if sh.stop.load(Ordering::Relaxed) {
                return;
            }
            pause(&mut polls);
            // The clock is read every few hundred polls only.
            if polls.is_multiple_of(256) && idle.elapsed() > SPIN {
                sh.sleepers.fetch_add(1, Ordering::SeqCst);
                let mut g = sh.sleep.lock().unwrap_or_else(|p| p.into_inner());
                while sh.generation.load(Ordering::SeqCst) == seen && !sh.stop.load(Ordering::SeqCst) {
                    g = sh.wake.wait(g).unwrap_or_else(|p| p.into_inner());
                }
                drop(g);
                sh.sleepers.fetch_sub(1, Ordering::SeqCst);
                idle = Instant::now();
            }
        }
        // SAFETY: the job of this generation stays as it is until this thread acknowledges it
        // (see `Session::run`).
        let job = unsafe { &*sh.job.get() };
        let (Some(work), chunks) = (job.work, job.chunks) else {
            sh.acks.fetch_add(1, Ordering::Release);
            continue;
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            while let Some(c) = claim(sh, thread, chunks) {
                // SAFETY: `work` is live until the acknowledgement below (see `Session::run`).
                unsafe { (*work)(c, thread) };
            }
        }));
        if result.is_err() {
            sh.panicked.store(true, Ordering::Relaxed);
        }
        sh.acks.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every chunk of every step runs exactly once, steps never overlap, and helpers that fell
    /// asleep between runs wake for the next one.
    #[test]
    fn every_chunk_runs_once_per_step() {
        let pool = Pool::new(3, || {}).expect("pool");
        for round in 0..3 {
            let s = pool.session().expect("free");
            for chunks in [0usize, 1, 2, 3, 7, 64, 1000] {
                let hits: Vec<AtomicU32> = (0..chunks).map(|_| AtomicU32::new(0)).collect();
                s.run(chunks, &|c, t| {
                    assert!(t < 3);
                    hits[c].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "round {round}, {chunks} chunks");
            }
            drop(s);
            if round == 1 {
                std::thread::sleep(SPIN * 3);
            }
        }
    }

    /// A second run while one holds the pool gets no session (it runs on its own thread).
    #[test]
    fn one_session_at_a_time() {
        let pool = Pool::new(2, || {}).expect("pool");
        let s = pool.session().expect("free");
        assert!(pool.session().is_none());
        drop(s);
        assert!(pool.session().is_some());
    }
}
