//! The syscall seam: the only place in the runtime with `unsafe`. Each wrapper is thin
//! and returns `std::io::Error` (errno); callers add the step and the path.

pub mod clone;
pub mod fs;
pub mod memfd;
pub mod mount;
pub mod mountfd;
pub mod pty;
pub mod trampoline;
pub mod userns;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Converts a -1 return into the errno.
pub(crate) fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// setns(2) into the namespace behind `fd` (nstype 0: any).
pub fn setns(fd: RawFd, nstype: i32) -> io::Result<()> {
    // SAFETY: setns only reads its integer arguments.
    cvt(unsafe { libc::setns(fd, nstype) } as libc::c_long).map(|_| ())
}

/// unshare(2).
pub fn unshare(flags: i32) -> io::Result<()> {
    // SAFETY: unshare only reads its integer argument.
    cvt(unsafe { libc::unshare(flags) } as libc::c_long).map(|_| ())
}

/// Closes every descriptor from `first` upwards except those in `keep`: nothing of the
/// host may stay open while a program path is resolved (CVE-2024-21626 class), and
/// close-on-exec is not enough, since execve resolves the path before it closes them.
/// Uses close_range (Linux 5.9); older kernels get one close per possible number up
/// to the descriptor limit (no /proc walk: /proc may be the container's by now).
pub fn close_fds_from(first: u32, keep: &[RawFd]) -> io::Result<()> {
    let mut keep: Vec<u32> = keep
        .iter()
        .filter_map(|&k| u32::try_from(k).ok())
        .filter(|&k| k >= first)
        .collect();
    keep.sort_unstable();
    keep.dedup();
    let mut lo = first;
    for hi in keep.iter().map(|k| Some(*k)).chain([None]) {
        let end = match hi {
            Some(k) if k == lo => {
                lo = k + 1;
                continue;
            }
            Some(k) => k - 1,
            None => u32::MAX,
        };
        close_range(lo, end)?;
        if let Some(k) = hi {
            lo = k + 1;
        }
    }
    Ok(())
}

/// close_range(lo, hi, 0), or closes one by one on kernels without it.
fn close_range(lo: u32, hi: u32) -> io::Result<()> {
    // SAFETY: close_range only closes descriptors of this process; the caller owns
    // every descriptor in the range and will not use them again.
    let r = unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0) };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    // SAFETY: rlimit is plain data that getrlimit fills in.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: getrlimit writes into our local.
    let max = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_cur.min(1 << 20) as u32
    } else {
        1 << 20
    };
    for fd in lo..=hi.min(max) {
        close_raw(fd as RawFd);
    }
    Ok(())
}

/// Sets or clears FD_CLOEXEC.
pub fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl F_GETFD/F_SETFD only change descriptor flags.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFD) } as libc::c_long)? as i32;
    let new = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, new) } as libc::c_long).map(|_| ())
}

/// Joins a new anonymous session keyring, so containers do not share the host's.
pub fn join_session_keyring(name: &str) -> io::Result<()> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING (1) reads the NUL-terminated name.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, 1, c.as_ptr()) };
    cvt(r).map(|_| ())
}

/// A socketpair for the parent/init protocol: SOCK_SEQPACKET keeps message boundaries.
pub fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into the array we own.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } as libc::c_long)?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// send(2) of one whole message.
pub fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    // SAFETY: send reads `buf.len()` bytes from a live slice.
    let n = cvt(unsafe {
        libc::send(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL,
        )
    } as libc::c_long)?;
    if n as usize != buf.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short send"));
    }
    Ok(())
}

/// recv(2) of one message already queued (MSG_DONTWAIT): EAGAIN when there is none.
pub fn recv_nowait(fd: &OwnedFd, max: usize) -> io::Result<Vec<u8>> {
    recv_flags(fd, max, libc::MSG_DONTWAIT)
}

/// recv(2) of one message; Ok(empty) at end of stream.
pub fn recv(fd: &OwnedFd, max: usize) -> io::Result<Vec<u8>> {
    recv_flags(fd, max, 0)
}

/// recv(2), retrying on EINTR. When the other side closed with data of ours unread, the
/// kernel reports ECONNRESET once, and what it sent before closing is still queued
/// behind that error: it is read, not lost.
fn recv_flags(fd: &OwnedFd, max: usize, flags: i32) -> io::Result<Vec<u8>> {
    // Not zeroed: the kernel writes what it returns, and the pages of a buffer sized for
    // the largest message are never touched for the usual few bytes (no page faults).
    let mut buf: Vec<u8> = Vec::with_capacity(max);
    let mut reset_seen = false;
    loop {
        // SAFETY: recv writes at most `buf.capacity()` bytes into our allocation.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.capacity(),
                flags,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ECONNRESET) if !reset_seen => {
                    reset_seen = true;
                    continue;
                }
                _ => return Err(e),
            }
        }
        // SAFETY: the kernel initialised the first n (<= capacity) bytes.
        unsafe { buf.set_len(n as usize) };
        return Ok(buf);
    }
}

/// sendmsg(2) of one message carrying descriptors (SCM_RIGHTS).
pub fn send_with_fds(fd: &OwnedFd, buf: &[u8], fds: &[RawFd]) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [io::IoSlice::new(buf)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let n = sendmsg::<()>(fd.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)?;
    if n != buf.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "short send"));
    }
    Ok(())
}

/// recvmsg(2) of one message and the descriptors it carries (close-on-exec), at most
/// `max_fds` of them. Ok(empty) at end of stream. Retries on EINTR.
pub fn recv_with_fds(
    fd: &OwnedFd,
    max: usize,
    max_fds: usize,
) -> io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    // The message's real size first (a zeroed buffer of `max` bytes would fault in
    // every page of it); 0 at end of stream.
    let len = loop {
        // SAFETY: with MSG_PEEK | MSG_TRUNC and no buffer, recv only reports the length
        // of the next packet (SOCK_SEQPACKET, Linux 3.4 and later).
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_PEEK | libc::MSG_TRUNC,
            )
        };
        match cvt(n as libc::c_long) {
            Ok(n) => break n as usize,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    };
    let mut buf = vec![0u8; len.clamp(1, max)];
    // SAFETY: CMSG_SPACE only computes a size.
    let space_len = unsafe { libc::CMSG_SPACE((max_fds * std::mem::size_of::<RawFd>()) as u32) };
    let mut space = vec![0u8; space_len as usize];
    loop {
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<()>(
            fd.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let n = msg.bytes;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(got) = c {
                // SAFETY: the kernel installed these descriptors in our table for us.
                fds.extend(got.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        // The control buffer is rounded up for alignment, so it can hold more than
        // `max_fds`: more than asked for is refused all the same (and closed).
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC) || fds.len() > max_fds;
        if truncated {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more descriptors than expected in a message",
            ));
        }
        buf.truncate(n);
        return Ok((buf, fds));
    }
}

/// The start time of a process (field 22 of /proc/<pid>/stat, in clock ticks since
/// boot): with the pid it identifies a process across pid reuse.
pub fn process_start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&stat)
        .map(|(_, start)| start)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/<pid>/stat"))
}

/// The state letter and start time of a process, or None if it is gone.
pub fn process_state(pid: i32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses (state, starttime) from /proc/<pid>/stat; the comm field may hold spaces
/// and parentheses, so fields are counted from the last ')'.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the comm: state is field 3 (index 0 here), starttime is field 22 (index 19).
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// kill(2).
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill only reads its integer arguments.
    cvt(unsafe { libc::kill(pid, sig) } as libc::c_long).map(|_| ())
}

/// prctl(PR_SET_NO_NEW_PRIVS, 1).
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } as libc::c_long).map(|_| ())
}

/// prctl(PR_SET_DUMPABLE): a non-dumpable process's memory and /proc/<pid>/exe are out
/// of reach of every process without CAP_SYS_PTRACE over it.
pub fn set_dumpable(on: bool) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, libc::c_ulong::from(on), 0, 0, 0) }
            as libc::c_long,
    )
    .map(|_| ())
}

/// prctl(PR_CAPBSET_DROP): removes capability `cap` from the bounding set.
pub fn capbset_drop(cap: u32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) }
            as libc::c_long,
    )
    .map(|_| ())
}

/// prctl(PR_SET_PDEATHSIG).
pub fn set_parent_death_signal(sig: i32) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) } as libc::c_long).map(|_| ())
}

/// Waits until a fifo's last writer has gone: the reader `fd` (non-blocking) sees it
/// hang up. Data still in it (not ours to take) is waited past, not read.
pub fn wait_hangup(fd: &OwnedFd) -> io::Result<()> {
    loop {
        let mut p = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes our one-element array.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if p.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            return Ok(());
        }
        // Readable: the start byte, until init takes it.
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

/// Restores the given signal mask.
pub fn set_sigmask(set: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: sigprocmask reads the set we pass and writes nothing (old = null).
    cvt(unsafe { libc::sigprocmask(libc::SIG_SETMASK, set, std::ptr::null_mut()) } as libc::c_long)
        .map(|_| ())
}

/// Blocks every signal, returning the previous mask.
pub fn block_all_signals() -> io::Result<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; sigfillset/sigprocmask write into our locals.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        cvt(libc::sigprocmask(libc::SIG_BLOCK, &all, &mut old) as libc::c_long)?;
        Ok(old)
    }
}

/// Resets every catchable signal's disposition to the default (before exec of the
/// container program; ignored signals would otherwise stay ignored).
pub fn reset_signal_dispositions() {
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: setting SIG_DFL has no memory effects; invalid numbers just fail.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// Waits for a blocked signal from `set`, with a timeout; None on timeout.
pub fn sigtimedwait(set: &libc::sigset_t, timeout_ms: u64) -> io::Result<Option<libc::siginfo_t>> {
    let ts = libc::timespec {
        tv_sec: (timeout_ms / 1000) as libc::time_t,
        tv_nsec: ((timeout_ms % 1000) * 1_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: siginfo_t is plain data that the kernel fills in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigtimedwait reads the set and timeout, writes into `info`.
        let r = unsafe { libc::sigtimedwait(set, &mut info, &ts) };
        if r < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(None),
                _ => return Err(e),
            }
        }
        return Ok(Some(info));
    }
}

/// A full signal set.
pub fn full_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset initializes it.
    unsafe {
        let mut s: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut s);
        s
    }
}

/// Non-blocking waitpid of any child; Some((pid, status)) when one has exited.
pub fn try_wait_any() -> io::Result<Option<(i32, i32)>> {
    let mut status = 0;
    // SAFETY: waitpid writes the status into our local.
    let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ECHILD) {
            return Ok(None);
        }
        return Err(e);
    }
    if r == 0 {
        return Ok(None);
    }
    Ok(Some((r, status)))
}

/// Blocking waitpid (retrying on EINTR).
pub fn wait(pid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into our local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok(status);
    }
}

/// The shell-style exit code of a wait status: the exit code, or 128+N for signal N.
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Immediately ends the process without running destructors (used in the child
/// after a failure has been reported).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// close(2) of a raw descriptor this process will never use or drop again (a cloned
/// child closing the parent's descriptors before exec).
pub fn close_raw(fd: RawFd) {
    // SAFETY: closing a descriptor only affects the descriptor table; the caller
    // guarantees no owner will use or close it afterwards.
    unsafe {
        libc::close(fd);
    }
}

/// clone(CLONE_PARENT | SIGCHLD) without a new stack: a fork whose child is a child of
/// our parent, which reaps it and gets its exit status (runc's nsexec does the same).
/// Only from a single-threaded process. Returns 0 in the child, its pid in the parent.
pub fn fork_sibling() -> io::Result<i32> {
    // SAFETY: a null stack makes clone fork-like: the child resumes here on a copy of
    // our memory, which is safe because the caller is single-threaded.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    cvt(r).map(|pid| pid as i32)
}

/// Whether `pid` is a child of this process (running or exited, not yet reaped).
pub fn is_child(pid: i32) -> bool {
    // SAFETY: siginfo_t is plain data that waitid fills in.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid with WNOWAIT | WNOHANG only looks: it reaps nothing and writes
    // into our local.
    let r = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    r == 0
}

/// Makes `fd` (the session's terminal on stdin) the controlling terminal of a new
/// session.
pub fn take_terminal(fd: RawFd) -> io::Result<()> {
    // SAFETY: setsid has no arguments; failure (already a leader) is harmless.
    unsafe {
        libc::setsid();
    }
    // SAFETY: TIOCSCTTY with 0 takes the terminal only if it has no session.
    cvt(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) } as libc::c_long).map(|_| ())
}

/// execveat(fd, "", AT_EMPTY_PATH): runs the file `fd` refers to (a memfd or an O_PATH
/// descriptor) with `argv` and `env`. Returns only on failure.
pub(crate) fn execveat_fd<'a>(
    fd: &OwnedFd,
    argv: impl IntoIterator<Item = &'a std::ffi::CStr>,
    env: &[std::ffi::CString],
) -> io::Error {
    let mut argv: Vec<*const libc::c_char> = argv.into_iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: argv and envp are NULL-terminated arrays of NUL-terminated strings that
    // outlive the call (the iterator's items borrow from the caller); AT_EMPTY_PATH execs
    // the file the descriptor refers to. On success this does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    io::Error::last_os_error()
}

/// Opens /dev/null on whichever of descriptors 0, 1 and 2 is closed, so that no file
/// berth opens later lands there and receives its output.
pub fn ensure_stdio_open() {
    let mut fds = [0, 1, 2].map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: poll reads and writes our three-element array; a zero timeout never blocks.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 3, 0) };
    if r < 0 {
        return;
    }
    for p in fds {
        if p.revents & libc::POLLNVAL != 0 {
            // SAFETY: open of a static NUL-terminated path; the lowest free descriptor,
            // the closed one, is taken (and deliberately kept).
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// Restores SIGPIPE's default action (the Rust runtime, or berth's caller, may have
/// left it ignored).
pub fn default_sigpipe() {
    // SAFETY: setting a signal disposition to SIG_DFL has no memory effects.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// setdomainname(2).
pub fn setdomainname(name: &str) -> io::Result<()> {
    // SAFETY: setdomainname reads `len` bytes from the string.
    cvt(unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) } as libc::c_long)
        .map(|_| ())
}

/// setrlimit(2); returns 0 or -1 with errno set.
pub fn setrlimit(res: u32, lim: &libc::rlimit) -> i32 {
    // SAFETY: setrlimit reads the struct we pass.
    unsafe { libc::setrlimit(res as _, lim) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_with_odd_comm() {
        let s = "123 (a b) c)) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(super::parse_stat(s), Some(('S', 98765)));
    }
}
