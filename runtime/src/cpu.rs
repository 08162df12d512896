//! The CPU features a plan may need, checked before its code is mapped.

/// Whether this CPU has the named feature (`avx2`, `fma`, `avx512f`). An unknown name is not
/// had: a plan that asks for it is refused rather than run.
pub fn has_feature(name: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match name {
            "avx2" => std::arch::is_x86_feature_detected!("avx2"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = name;
        false
    }
}
