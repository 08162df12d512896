//! Subcommands of the `incept` tool and the options they share.

pub mod inspect;
pub mod ops;
pub mod run;
pub mod shapes;
