//! The one exit-code policy of `bz`: 0 success (also an early stop), 1 a failed run or command, 2 a bad config, command line or
//! input file (clap's own usage errors are 2 as well), 3 the loss became NaN/inf, 130 interrupted by Ctrl-C.

use bz_host::config::ConfigError;
use bz_host::predict::InputError;
use bz_host::train::NonFiniteLoss;
use std::process::ExitCode;

/// The code of a Ctrl-C stop, also used where a second Ctrl-C quits at once.
pub const INTERRUPTED: u8 = 130;

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
pub fn code(result: anyhow::Result<Status>) -> ExitCode {
    match result {
        Ok(Status::Success) => ExitCode::SUCCESS,
        Ok(Status::Failed) => ExitCode::from(1),
        Ok(Status::Interrupted) => ExitCode::from(INTERRUPTED),
        Ok(Status::Exited(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(error_code(&e))
        }
    }
}

fn error_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<InputError>().is_some() {
        2
    } else if e.downcast_ref::<NonFiniteLoss>().is_some() {
        3
    } else {
        1
    }
}
