//! Room for signal frames on threads that run AMX code.
//!
//! While AMX tiles are live, Linux saves their 8 KB of state in every signal frame. A thread
//! whose alternate signal stack is smaller than that frame is killed when a handler installed
//! with SA_ONSTACK runs on it (CPython installs its handlers so, and `faulthandler`, which
//! pytest enables, gives threads a small alternate stack; OpenVINO met the same, see its
//! `wa_amx_python_sigaltstack.md`). Before a thread runs AMX kernels, [`ensure_signal_stack`]
//! replaces a too small alternate stack with a larger one, kept for the thread's life; a thread
//! without one keeps none (its handlers run on its own stack).

/// Alternate stacks smaller than this are replaced.
pub const MIN_SIGNAL_STACK: usize = 64 << 10;
/// The size of a replacement.
pub const SIGNAL_STACK: usize = 256 << 10;

/// The alternate signal stack of this thread: (size, enabled, in use now).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub fn current() -> (usize, bool, bool) {
    let mut old = StackT::default();
    sigaltstack(std::ptr::null(), &mut old);
    (old.ss_size, old.ss_flags & SS_DISABLE == 0, old.ss_flags & SS_ONSTACK != 0)
}

/// Makes this thread's alternate signal stack, if it has one, at least [`MIN_SIGNAL_STACK`]
/// bytes (see the module documentation). Cheap after the first call on a thread.
pub fn ensure_signal_stack() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    OWN.with(|own| {
        if own.borrow().is_some() {
            return;
        }
        let (size, enabled, on_it) = current();
        if !enabled || on_it || size >= MIN_SIGNAL_STACK {
            return;
        }
        let mut stack = vec![0u8; SIGNAL_STACK].into_boxed_slice();
        let new = StackT { ss_sp: stack.as_mut_ptr().cast(), ss_flags: 0, ss_size: stack.len() };
        if sigaltstack(&new, std::ptr::null_mut()) == 0 {
            *own.borrow_mut() = Some(Own(stack));
        }
    });
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const SS_ONSTACK: i32 = 1;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const SS_DISABLE: i32 = 2;

/// Linux's `stack_t` on x86-64.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
#[repr(C)]
struct StackT {
    ss_sp: *mut u8,
    ss_flags: i32,
    ss_size: usize,
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
impl Default for StackT {
    fn default() -> StackT {
        StackT { ss_sp: std::ptr::null_mut(), ss_flags: 0, ss_size: 0 }
    }
}

/// A stack this module installed: disabled again before its memory goes, when the thread ends.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
struct Own(#[allow(dead_code)] Box<[u8]>);

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
impl Drop for Own {
    fn drop(&mut self) {
        let off = StackT { ss_sp: std::ptr::null_mut(), ss_flags: SS_DISABLE, ss_size: 0 };
        sigaltstack(&off, std::ptr::null_mut());
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
thread_local! {
    static OWN: std::cell::RefCell<Option<Own>> = const { std::cell::RefCell::new(None) };
}

/// `sigaltstack(new, old)` (either may be null), returning 0 or the negated errno.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn sigaltstack(new: *const StackT, old: *mut StackT) -> i64 {
    const SYS_SIGALTSTACK: i64 = 131;
    let ret: i64;
    // SAFETY: sigaltstack reads a stack_t from `new` and writes one to `old` when not null;
    // both point to live `StackT`s (or are null). The syscall clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_SIGALTSTACK => ret,
            in("rdi") new,
            in("rsi") old,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    use super::*;

    /// A thread with a small alternate stack gets a large one, which the thread keeps; a thread
    /// without one keeps none; a large one is left alone.
    #[test]
    fn small_alternate_stacks_are_enlarged_and_missing_ones_left_alone() {
        std::thread::spawn(|| {
            let mut small = vec![0u8; 8 << 10];
            let s = StackT { ss_sp: small.as_mut_ptr(), ss_flags: 0, ss_size: small.len() };
            assert_eq!(sigaltstack(&s, std::ptr::null_mut()), 0);
            assert_eq!(current(), (8 << 10, true, false));
            ensure_signal_stack();
            assert_eq!(current(), (SIGNAL_STACK, true, false));
            ensure_signal_stack();
            assert_eq!(current(), (SIGNAL_STACK, true, false));
        })
        .join()
        .expect("thread");
        std::thread::spawn(|| {
            let off = StackT { ss_sp: std::ptr::null_mut(), ss_flags: SS_DISABLE, ss_size: 0 };
            assert_eq!(sigaltstack(&off, std::ptr::null_mut()), 0);
            ensure_signal_stack();
            assert!(!current().1, "a thread without an alternate stack got one");
        })
        .join()
        .expect("thread");
        std::thread::spawn(|| {
            let mut big = vec![0u8; 1 << 20];
            let s = StackT { ss_sp: big.as_mut_ptr(), ss_flags: 0, ss_size: big.len() };
            assert_eq!(sigaltstack(&s, std::ptr::null_mut()), 0);
            ensure_signal_stack();
            assert_eq!(current().0, 1 << 20);
            let off = StackT { ss_sp: std::ptr::null_mut(), ss_flags: SS_DISABLE, ss_size: 0 };
            sigaltstack(&off, std::ptr::null_mut());
        })
        .join()
        .expect("thread");
    }
}
