//! A spinner on stderr for work that can take seconds (compiling, approximate factorisation, the
//! reference interpreter in `check`): it says what is running and for how long. It draws only
//! when stderr is a terminal and CI is unset, so logs, pipes and tests see none of it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Clears itself when dropped.
pub struct Spinner(ProgressBar);

/// Whether to draw: a terminal, and not a CI log that merely claims to be one.
pub fn enabled(stderr_is_terminal: bool, ci: bool) -> bool {
    stderr_is_terminal && !ci
}

impl Spinner {
    pub fn start(message: impl Into<String>) -> Spinner {
        let draw = enabled(std::io::stderr().is_terminal(), std::env::var_os("CI").is_some());
        let bar = if draw {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(message.into());
        if draw {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Spinner(bar)
    }

    /// Says what is running now.
    pub fn set(&self, message: impl Into<String>) {
        self.0.set_message(message.into());
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_only_on_a_terminal_outside_ci() {
        assert!(enabled(true, false));
        assert!(!enabled(false, false));
        assert!(!enabled(true, true));
        assert!(!enabled(false, true));
    }
}
