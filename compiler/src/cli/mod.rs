//! Subcommands of the `incept` tool and the options they share.

pub mod bench;
pub mod check;
pub mod compile;
pub mod inspect;
pub mod ops;
pub mod optimize;
pub mod passes;
pub mod peak;
pub mod run;
pub mod shapes;

use std::io::Write;

/// Writes text to stdout. A closed pipe (`incept inspect m.onnx | head`) ends the program quietly
/// instead of failing, as other command-line tools do.
pub fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}
