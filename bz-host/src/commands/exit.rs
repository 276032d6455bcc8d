//! A command's result as the process's exit code and its one `error: …` line; the codes themselves are
//! `bz_host::exit_code`'s policy.

use bz_host::exit_code::{self, FAILED};

pub use bz_host::exit_code::INTERRUPTED;

/// How a command that did not fail with an error ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    /// The command printed its own error (e.g. `bz plugins verify` found a bad library).
    Failed,
    /// Ctrl-C stopped it cleanly.
    Interrupted,
    /// Processes it started ended so (`bz train --nproc`: the first failed rank's code, passed on).
    Exited(u8),
}

/// The process's exit code for a command's result; an error is printed here, as one `error: …` line.
pub fn number(result: anyhow::Result<Status>) -> u8 {
    match result {
        Ok(Status::Success) => 0,
        Ok(Status::Failed) => FAILED,
        Ok(Status::Interrupted) => INTERRUPTED,
        Ok(Status::Exited(code)) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit_code::for_error(&e)
        }
    }
}
