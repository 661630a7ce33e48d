//! The parent/init protocol over a SOCK_SEQPACKET socketpair, one JSON message per packet.
//!
//! ```text
//!  berth create / run (parent)                    container init (child)
//!  ----------------------------                   ----------------------
//!  clone3(CLONE_NEW*) ───────────────────────────▶ starts, restores signal mask
//!  (fast path without a userns: not NET, IPC)       [those two] unshare(net, ipc)
//!  [fast path, new userns] writes uid/gid maps
//!                         ◀─────────── NeedIdMaps  [slow path] setns(paths), unshare(new)
//!  writes uid/gid maps    ─────────── IdMapsWritten ▶
//!  [no CLONE_INTO_CGROUP] joins the v2 cgroup
//!                          ───────────────── Go ──▶ [v2] unshare(cgroup ns); rootfs mounts
//!  [v1] creates the cgroup; applies limits          (those before the first cgroup mount)
//!  [v1, no userns] builds the cgroup mount's tree
//!                          ── CgroupReady+fds ────▶ [v1] writes 0 to each `tasks` (moves
//!                                                   itself), unshare(cgroup ns)
//!  writes state.json                                cgroup mounts, devices
//!  [hooks] prestart, createRuntime ◀── RuntimeHooks
//!                          ────────── HooksDone ──▶ createContainer hooks, pivot_root, sysctl,
//!                                                   masked/readonly paths, hostname,
//!                                                   closes every other descriptor, cwd,
//!                                                   rlimits, user, PATH lookup, [with the
//!                                                   trampoline] seccomp, exec of the sealed
//!                                                   trampoline, which is init from now on
//!  [run] queues Start now  ───────────── Start ──▶ (read once ready)
//!  [joined pid ns] reaps the first ◀──── InitPid    [joined pid ns: after cwd] forks the
//!                                                   init into that namespace, exits
//!                          ◀──── Ready | Error{step, path, errno, message}
//!  exits (create)                                   waits for start (create: `berth
//!                                                   start` writes exec.fifo; run: Start)
//!                                                   [without the trampoline: startContainer
//!                                                   hooks, seccomp] exec of process.args
//! ```
//! With the trampoline (see exec_path), `Ready` is written by it: the same bytes as
//! the serialised message. The exec helper's protocol is in `exec_helper`.
//! Every failure in the child travels back as `Error` with its step and path, so
//! `create` can print it and clean up; the child then exits.

use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};

use crate::sys;

/// Messages of the protocol, in both directions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    NeedIdMaps,
    IdMapsWritten,
    Go,
    /// The container's v1 cgroup exists: its `tasks` files (these paths) travel as
    /// descriptors with the message, for init to move itself in; with `tree`, one more
    /// descriptor follows them: the first cgroup mount's tree, built by the parent
    /// ([`crate::rootfs::mounts::cgroup_v1_tree`]) for init to attach.
    CgroupReady {
        tasks: Vec<String>,
        tree: bool,
    },
    /// The rootfs is mounted (not yet pivoted): the parent runs prestart and
    /// createRuntime hooks, then answers `HooksDone`.
    RuntimeHooks,
    HooksDone,
    /// A pid namespace joined by path: the container's init, forked into it at the end
    /// of the setup, has this pid (in the parent's pid namespace).
    InitPid(i32),
    Ready,
    Start,
    Error(InitError),
}

/// A failure inside the container init, with where it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{step}{}: {message}", path.as_ref().map(|p| format!(" {p}")).unwrap_or_default())]
pub struct InitError {
    pub step: String,
    pub path: Option<String>,
    pub errno: Option<i32>,
    pub message: String,
}

impl InitError {
    pub fn io(
        step: impl Into<String>,
        path: Option<&std::path::Path>,
        e: &std::io::Error,
    ) -> InitError {
        InitError {
            step: step.into(),
            path: path.map(|p| p.display().to_string()),
            errno: e.raw_os_error(),
            message: e.to_string(),
        }
    }
    pub fn msg(
        step: impl Into<String>,
        path: Option<&std::path::Path>,
        message: impl Into<String>,
    ) -> InitError {
        InitError {
            step: step.into(),
            path: path.map(|p| p.display().to_string()),
            errno: None,
            message: message.into(),
        }
    }
}

/// Errors of the channel itself.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("the container init exited during setup")]
    Closed,
    #[error("malformed message from the other side: {0}")]
    Malformed(String),
    #[error("unexpected message {got:?} while waiting for {want}")]
    Unexpected {
        got: Box<Message>,
        want: &'static str,
    },
}

/// One end of the socketpair.
pub struct Channel {
    fd: OwnedFd,
}

const MAX_MESSAGE: usize = 64 * 1024;

impl Channel {
    pub fn new(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    pub fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub fn send(&self, m: &Message) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec(m).map_err(|e| ChannelError::Malformed(e.to_string()))?;
        sys::send(&self.fd, &bytes).map_err(|e| ChannelError::Io("sending to the other side", e))
    }

    /// Sends a message with descriptors attached (SCM_RIGHTS).
    pub fn send_with_fds(
        &self,
        m: &Message,
        fds: &[std::os::fd::RawFd],
    ) -> Result<(), ChannelError> {
        let bytes = serde_json::to_vec(m).map_err(|e| ChannelError::Malformed(e.to_string()))?;
        sys::send_with_fds(&self.fd, &bytes, fds)
            .map_err(|e| ChannelError::Io("sending to the other side", e))
    }

    /// Receives a message and the descriptors attached to it (at most `max_fds`).
    pub fn recv_with_fds(&self, max_fds: usize) -> Result<(Message, Vec<OwnedFd>), ChannelError> {
        let (bytes, fds) = sys::recv_with_fds(&self.fd, MAX_MESSAGE, max_fds)
            .map_err(|e| ChannelError::Io("reading from the other side", e))?;
        if bytes.is_empty() {
            return Err(ChannelError::Closed);
        }
        let m =
            serde_json::from_slice(&bytes).map_err(|e| ChannelError::Malformed(e.to_string()))?;
        Ok((m, fds))
    }

    /// A message already waiting, if any (never blocks).
    pub fn try_recv(&self) -> Option<Message> {
        let bytes = sys::recv_nowait(&self.fd, MAX_MESSAGE).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// One packet as it came (for the exec helper's pid report, which is not JSON);
    /// `Closed` at end of stream.
    pub fn recv_raw(&self) -> Result<Vec<u8>, ChannelError> {
        let bytes = sys::recv(&self.fd, MAX_MESSAGE)
            .map_err(|e| ChannelError::Io("reading from the other side", e))?;
        if bytes.is_empty() {
            return Err(ChannelError::Closed);
        }
        Ok(bytes)
    }

    pub fn recv(&self) -> Result<Message, ChannelError> {
        // A reset (init failed before reading CgroupReady) still yields its last report:
        // sys::recv reads past it.
        let bytes = sys::recv(&self.fd, MAX_MESSAGE)
            .map_err(|e| ChannelError::Io("reading from the other side", e))?;
        if bytes.is_empty() {
            return Err(ChannelError::Closed);
        }
        serde_json::from_slice(&bytes).map_err(|e| ChannelError::Malformed(e.to_string()))
    }

    /// Receives, turning an `Error` message into `Err` and anything but `want` into
    /// `Unexpected`.
    pub fn expect(&self, want: Message, name: &'static str) -> Result<(), ExpectError> {
        match self.recv()? {
            Message::Error(e) => Err(ExpectError::Init(e)),
            m if m == want => Ok(()),
            got => Err(ExpectError::Channel(ChannelError::Unexpected {
                got: Box::new(got),
                want: name,
            })),
        }
    }
}

/// A failed wait: the init reported an error, or the channel broke.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    #[error("{0}")]
    Init(InitError),
    #[error(transparent)]
    Channel(#[from] ChannelError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_over_socketpair() {
        let (a, b) = sys::seqpacket_pair().unwrap();
        let (a, b) = (Channel::new(a), Channel::new(b));
        let err = InitError::msg(
            "mount proc",
            Some(std::path::Path::new("/proc")),
            "Permission denied",
        );
        a.send(&Message::Error(err.clone())).unwrap();
        a.send(&Message::Ready).unwrap();
        assert_eq!(b.recv().unwrap(), Message::Error(err.clone()));
        assert_eq!(b.expect(Message::Ready, "Ready").ok(), Some(()));
        assert_eq!(err.to_string(), "mount proc /proc: Permission denied");
        drop(a);
        assert!(matches!(b.recv(), Err(ChannelError::Closed)));
    }

    #[test]
    fn descriptors_travel_with_a_message() {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let (a, b) = sys::seqpacket_pair().unwrap();
        let (a, b) = (Channel::new(a), Channel::new(b));
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"shared").unwrap();
        let m = Message::CgroupReady {
            tasks: vec!["/x/tasks".into()],
            tree: false,
        };
        a.send_with_fds(&m, &[f.as_raw_fd()]).unwrap();
        let (got, fds) = b.recv_with_fds(4).unwrap();
        assert_eq!(got, m);
        assert_eq!(fds.len(), 1);
        let mut g = std::fs::File::from(fds.into_iter().next().unwrap());
        g.rewind().unwrap();
        let mut s = String::new();
        g.read_to_string(&mut s).unwrap();
        assert_eq!(s, "shared");
        // More descriptors than the receiver allows is an error, not a silent loss.
        let fd = f.as_raw_fd();
        a.send_with_fds(&m, &[fd, fd, fd]).unwrap();
        assert!(b.recv_with_fds(1).is_err());
    }
}
