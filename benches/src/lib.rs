//! Shared helpers for Berth benchmarks.

pub mod interleave;
pub mod shell;
pub mod usr_image;
