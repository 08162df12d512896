//! The IR text form: one stable, readable rendering of a graph that the parser reads back, so that
//! print -> parse -> print is the identity and tests can be written as short text graphs.
//!
//! ```text
//! graph "tiny" {
//!   input %x : f32[N,3,8,8]
//!   %w = const f32[4,3,3,3] #5e1f09a2
//!   %b = const f32[4] [0.1, 0.2, 0.3, 0.4]
//!   %y = Conv(%x, %w, %b) {kernel_shape=[3,3], strides=[1,1], pads=[1,1,1,1], dilations=[1,1], group=1} : f32[N,4,8,8]
//!   %z = Relu(%y) : f32[N,4,8,8]
//!   output %z
//! }
//! ```
//!
//! Values are `%name` (quoted when the name has characters outside `[A-Za-z0-9_./-]`), absent
//! optional inputs `_`, and a node whose name differs from its first output's carries `@name`.
//! Constants with more than [`print::INLINE_LIMIT`] elements print as a short content hash; the
//! parser resolves those from a [`ConstPool`] (e.g. the constants of the graph that was printed),
//! and also accepts `random(SEED)` for seeded uniform [-1, 1) values, which tests use for weights.

pub mod dot;
pub mod parse;
pub mod print;

pub use parse::{ConstPool, parse, parse_with};
pub use print::print;
