//! The container's init process and how `berth` talks to it.

pub mod confine;
pub mod exec_path;
pub mod init;
pub mod protocol;
