//! Functions the generated code calls through its helper table instead of by absolute address,
//! so that the machine code stays position independent. The table's order is part of the kernel
//! ABI: `HELPERS[i]` is what kernels load from slot `i`.

/// Scalar f32 -> f32 functions, by index.
pub mod index {
    pub const EXP: usize = 0;
    pub const LOG: usize = 1;
    pub const TANH: usize = 2;
    pub const ERF: usize = 3;
    pub const SQRT: usize = 4;
    pub const POW: usize = 5;
}

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
extern "C" fn pow(x: f32, y: f32) -> f32 {
    x.powf(y)
}

/// The helper table kernels receive (as one of their operands).
pub fn table() -> [usize; 6] {
    let unary = |f: extern "C" fn(f32) -> f32| f as *const () as usize;
    [
        unary(exp),
        unary(log),
        unary(tanh),
        unary(erf),
        unary(sqrt),
        pow as extern "C" fn(f32, f32) -> f32 as *const () as usize,
    ]
}
