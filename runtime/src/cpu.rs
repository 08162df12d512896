//! The CPU features a plan may need, checked before its code is mapped.
//!
//! Most are plain CPUID bits (through `std`'s detection). The AMX ones need more: the OS must
//! save the tile state (XCR0 bits 17 and 18) and, on Linux, hand it to the process on request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`): the first tile instruction of a
//! process that did not ask dies with SIGILL. [`has_feature`] asks once, the first time an AMX
//! feature is queried, and says the feature is missing if the request is refused
//! ([`tile_state`] says why).

use std::sync::Mutex;
use std::sync::OnceLock;

/// Features a test has declared missing (see [`hide_features`]).
static HIDDEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Makes [`has_feature`] report these features as missing, as on a CPU without them: a test
/// hook for the refusals of plans that need them (`amx-tile`, `avx512bf16`, ...). An empty
/// list restores the CPU's own answers. Also read from `INCEPT_HIDE_CPU_FEATURES`
/// (comma-separated) when the process starts querying.
#[doc(hidden)]
pub fn hide_features(names: &[&str]) {
    let mut h = HIDDEN.lock().unwrap_or_else(|e| e.into_inner());
    *h = names.iter().map(|s| s.to_string()).collect();
}

fn hidden(name: &str) -> bool {
    static FROM_ENV: OnceLock<Vec<String>> = OnceLock::new();
    let env = FROM_ENV.get_or_init(|| {
        std::env::var("INCEPT_HIDE_CPU_FEATURES")
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    });
    env.iter().any(|f| f == name) || HIDDEN.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|f| f == name)
}

/// Whether this CPU has the named feature (`sse4.1`, `avx2`, `fma`, `avx512f`, `avx512bw`,
/// `avx512bf16`, `amx-tile`, `amx-bf16`; see `Tier::features` in the compiler). An unknown name
/// is not had: a plan that asks for it is refused rather than run. The AMX features count only
/// when the OS has granted this process the tile state (asked for here, once).
pub fn has_feature(name: &str) -> bool {
    if hidden(name) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        match name {
            "sse3" => std::arch::is_x86_feature_detected!("sse3"),
            "ssse3" => std::arch::is_x86_feature_detected!("ssse3"),
            "sse4.1" => std::arch::is_x86_feature_detected!("sse4.1"),
            "sse4.2" => std::arch::is_x86_feature_detected!("sse4.2"),
            "popcnt" => std::arch::is_x86_feature_detected!("popcnt"),
            "avx" => std::arch::is_x86_feature_detected!("avx"),
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "bmi1" => std::arch::is_x86_feature_detected!("bmi1"),
            "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
            "lzcnt" => std::arch::is_x86_feature_detected!("lzcnt"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
            "avx512bf16" => std::arch::is_x86_feature_detected!("avx512bf16"),
            "avx512vnni" => std::arch::is_x86_feature_detected!("avx512vnni"),
            "avxvnni" => std::arch::is_x86_feature_detected!("avxvnni"),
            "amx-tile" | "amx-bf16" => amx_cpuid(name) && tile_state().is_ok(),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        false
    }
}

/// Whether CPUID lists the AMX feature (leaf 7: EDX bit 24 AMX-TILE, bit 22 AMX-BF16).
#[cfg(target_arch = "x86_64")]
fn amx_cpuid(name: &str) -> bool {
    let max = std::arch::x86_64::__cpuid(0).eax;
    if max < 7 {
        return false;
    }
    let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
    let bit = if name == "amx-tile" { 24 } else { 22 };
    edx & (1 << bit) != 0 && edx & (1 << 24) != 0
}

/// Whether this process may use the AMX tile registers: the OS saves them (XCR0 bits 17 and
/// 18) and, on Linux, granted the process their state (asked for once, here). The error says
/// what is missing.
pub fn tile_state() -> Result<(), String> {
    static STATE: OnceLock<Result<(), String>> = OnceLock::new();
    STATE.get_or_init(request_tile_state).clone()
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_tile_state() -> Result<(), String> {
    if !amx_cpuid("amx-tile") {
        return Err("this CPU has no AMX tiles".into());
    }
    // XGETBV needs OSXSAVE (CPUID.1:ECX bit 27).
    let ecx = std::arch::x86_64::__cpuid(1).ecx;
    if ecx & (1 << 27) == 0 {
        return Err("the OS does not enable XSAVE".into());
    }
    // SAFETY: XGETBV(0) is valid when OSXSAVE is set.
    let xcr0 = unsafe { std::arch::x86_64::_xgetbv(0) };
    if xcr0 & (3 << 17) != 3 << 17 {
        return Err("the OS does not save the AMX tile state (XCR0 bits 17-18 clear)".into());
    }
    const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    let req = arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
    if req != 0 {
        return Err(format!(
            "Linux refused this process the AMX tile state (arch_prctl(ARCH_REQ_XCOMP_PERM) returned {req})"
        ));
    }
    let mut mask: u64 = 0;
    let got = arch_prctl(ARCH_GET_XCOMP_PERM, &mut mask as *mut u64 as u64);
    if got != 0 || mask & (1 << XFEATURE_XTILEDATA) == 0 {
        return Err(format!("Linux did not grant the AMX tile state (permitted features {mask:#x})"));
    }
    Ok(())
}

/// `syscall(SYS_arch_prctl, code, arg)`, returning 0 or the negated errno.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn arch_prctl(code: u64, arg: u64) -> i64 {
    const SYS_ARCH_PRCTL: u64 = 158;
    let ret: i64;
    // SAFETY: arch_prctl with these codes reads or writes only the u64 `arg` points to (GET) or
    // takes a feature number (REQ); the syscall clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL as i64 => ret,
            in("rdi") code,
            in("rsi") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn request_tile_state() -> Result<(), String> {
    Err("AMX tiles are used on Linux x86-64 only".into())
}

/// The error for a plan whose `missing` features this CPU lacks: what is missing, why a feature
/// the CPU lists does not count, and how to compile for this CPU instead.
pub(crate) fn missing_error(missing: &[String]) -> crate::RunError {
    let amx = missing.iter().any(|f| f.starts_with("amx"));
    let bf16 = missing.iter().any(|f| f == "avx512bf16" || f == "avx512bw");
    let detail = match tile_state() {
        Err(why) if amx => format!(" ({why})"),
        _ => String::new(),
    };
    let vnni = missing.iter().any(|f| f == "avx512vnni");
    let avx_vnni = missing.iter().any(|f| f == "avxvnni");
    let hint = if amx && !bf16 && has_feature("avx512bf16") {
        "compile with --cpu avx512bf16 for bf16 without AMX, or with --precision f32".to_string()
    } else if vnni && !amx && !bf16 && has_feature("avx512f") {
        "compile with --cpu avx512 for int8 convs without VNNI".to_string()
    } else if avx_vnni && missing.len() == 1 && has_feature("avx2") {
        "compile with --cpu avx2 for int8 convs without AVX-VNNI".to_string()
    } else if amx || bf16 {
        "compile with --precision f32 for this CPU".to_string()
    } else {
        "compile with --cpu baseline for any x86-64 CPU with SSE4.2".to_string()
    };
    crate::RunError::CpuFeatures { missing: missing.join(", "), detail, hint }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_features_are_missing() {
        assert!(!has_feature("no-such-feature"));
        assert!(!has_feature(""));
    }

    /// The grant is asked for once and says the same thing every time; the AMX features follow it.
    #[test]
    fn tile_state_is_stable_and_decides_amx() {
        let first = tile_state();
        assert_eq!(first, tile_state());
        if first.is_err() {
            assert!(!has_feature("amx-tile") && !has_feature("amx-bf16"));
        }
        println!("tile state: {first:?}");
    }
}
