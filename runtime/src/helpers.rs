//! Functions the generated code calls through its helper table instead of by absolute address,
//! so that the machine code stays position independent. The table's order is part of the kernel
//! ABI: `HELPERS[i]` is what kernels load from slot `i`.

/// Helper functions by index: f32 -> f32 (EXP ... SQRT), (f32, f32) -> f32 (POW), f64 -> f64
/// (EXP64, LOG64) and (f64, f64) -> f64 (POW64, FMOD64). New helpers go at the end, so that
/// artifacts built before them keep their indices.
pub mod index {
    pub const EXP: usize = 0;
    pub const LOG: usize = 1;
    pub const TANH: usize = 2;
    pub const ERF: usize = 3;
    pub const SQRT: usize = 4;
    pub const POW: usize = 5;
    pub const EXP64: usize = 6;
    pub const LOG64: usize = 7;
    pub const POW64: usize = 8;
    pub const FMOD64: usize = 9;
}

/// Entries in the helper table.
pub const COUNT: usize = 10;

extern "C" fn exp(x: f32) -> f32 {
    x.exp()
}
extern "C" fn log(x: f32) -> f32 {
    x.ln()
}
extern "C" fn tanh(x: f32) -> f32 {
    x.tanh()
}
extern "C" fn erf(x: f32) -> f32 {
    libm::erff(x)
}
extern "C" fn sqrt(x: f32) -> f32 {
    x.sqrt()
}
/// In f64, then rounded: the reference computes Pow that way for every dtype.
extern "C" fn pow(x: f32, y: f32) -> f32 {
    (x as f64).powf(y as f64) as f32
}
extern "C" fn exp64(x: f64) -> f64 {
    x.exp()
}
extern "C" fn log64(x: f64) -> f64 {
    x.ln()
}
extern "C" fn pow64(x: f64, y: f64) -> f64 {
    x.powf(y)
}
/// C's fmod: the remainder with the dividend's sign (Rust's `%` on floats).
extern "C" fn fmod64(x: f64, y: f64) -> f64 {
    x % y
}

/// The helper table kernels receive (as one of their operands).
pub fn table() -> [usize; COUNT] {
    let unary = |f: extern "C" fn(f32) -> f32| f as *const () as usize;
    let unary64 = |f: extern "C" fn(f64) -> f64| f as *const () as usize;
    [
        unary(exp),
        unary(log),
        unary(tanh),
        unary(erf),
        unary(sqrt),
        pow as extern "C" fn(f32, f32) -> f32 as *const () as usize,
        unary64(exp64),
        unary64(log64),
        pow64 as extern "C" fn(f64, f64) -> f64 as *const () as usize,
        fmod64 as extern "C" fn(f64, f64) -> f64 as *const () as usize,
    ]
}
