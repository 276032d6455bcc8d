//! The interface between `bz` and its plugins.
//!
//! Placeholder until the plugin interface lands (the plugins issue): the host already drives its built-in
//! console output through an internal event stream with the same 14 lifecycle events this crate will export
//! across the FFI boundary.
