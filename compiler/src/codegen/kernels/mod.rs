//! Kernel families. Each spec is specialised to exact shapes and constants and emits one
//! Cranelift function with the runtime's kernel ABI.

pub mod conv;
pub mod copy;
pub mod depthwise;
pub mod elementwise;
pub mod gather;
pub mod gemm;
pub mod integer;
pub mod logic;
pub mod math;
pub mod nd;
pub mod norm;
pub mod pool;
pub mod qlinear;
pub mod quant;
pub mod reduce;
pub mod resample;
pub mod select;
pub mod transposed;
pub mod typed;
pub mod volume;
pub mod winograd;
