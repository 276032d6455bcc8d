//! Ctrl-C for the long-running commands: the first one asks the command to stop cleanly, a second one quits at once.

use super::exit;
use anyhow::{Context, Result};

/// Installs the handler: `request` records the stop and returns whether one was already requested; `notice` is
/// printed on the first Ctrl-C so the user knows what the wait is for.
pub fn on_ctrl_c(notice: &'static str, request: impl Fn() -> bool + Send + 'static) -> Result<()> {
    ctrlc::set_handler(move || {
        if request() {
            // A second Ctrl-C: the user does not want to wait.
            std::process::exit(exit::INTERRUPTED.into());
        }
        eprintln!("\ninterrupt: {notice} (Ctrl-C again to quit at once)");
    })
    .context("cannot install the Ctrl-C handler")
}
