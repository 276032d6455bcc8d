//! Ctrl-C for the long-running commands: the first one asks the command to stop cleanly, a second one quits at once.

use super::exit;
use anyhow::{Context, Result};
use bz_host::interrupt::Interrupt;

/// Installs the handler and returns the [`Interrupt`] it raises; `notice` is printed on the first Ctrl-C so the
/// user knows what the wait is for.
pub fn on_ctrl_c(notice: &'static str) -> Result<Interrupt> {
    let interrupt = Interrupt::default();
    let handle = interrupt.clone();
    ctrlc::set_handler(move || {
        if handle.raise() {
            // A second Ctrl-C: the user does not want to wait.
            std::process::exit(exit::INTERRUPTED.into());
        }
        eprintln!("\ninterrupt: {notice} (Ctrl-C again to quit at once)");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(interrupt)
}
