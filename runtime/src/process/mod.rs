//! The container's init process, the helper that starts `exec`'d processes, and how
//! `berth` talks to them.

pub mod confine;
pub mod exec_helper;
pub mod exec_path;
pub mod init;
pub mod protocol;
