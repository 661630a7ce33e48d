//! Berth: a runc-compatible OCI runtime.

pub mod cgroups;
pub mod cli;
pub mod spec;
