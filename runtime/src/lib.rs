//! Berth: a runc-compatible OCI runtime.

pub mod cli;
