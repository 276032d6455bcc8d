//! Ctrl-C as a value: the command that installs the signal handler creates an [`Interrupt`] and hands a clone to
//! the trainer (which checks it between optimizer steps) or to the tune scheduler (which stops its trials). No global state, so a library caller (or a test) can
//! interrupt a run without signals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag shared by whoever asks a run to stop (a signal handler) and the trainer that obeys.
///
/// ```
/// let interrupt = bz_host::interrupt::Interrupt::default();
/// let handler = interrupt.clone();
/// assert!(!handler.raise(), "the first raise");
/// assert!(interrupt.is_raised() && handler.raise());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Asks the run to stop; true when it had been asked already (a second Ctrl-C).
    pub fn raise(&self) -> bool {
        self.0.swap(true, Ordering::SeqCst)
    }

    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
