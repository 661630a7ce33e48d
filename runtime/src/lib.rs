//! Berth: a runc-compatible OCI runtime.
//!
//! Layers, from the bottom: `sys` (the only unsafe code: syscalls), `spec` (config.json
//! into a validated plan, pure), `cgroups`, `rootfs` and `process` (the container init),
//! `container` (state and lifecycle), `cli` (runc's commands).

pub mod capabilities;
pub mod cgroups;
pub mod cli;
pub mod container;
pub mod hooks;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod signals;
pub mod spec;
pub mod sys;
