//! The container's init process and how `berth` talks to it.

pub mod init;
pub mod protocol;
