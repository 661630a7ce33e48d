//! Terminals: a pty from the container's own devpts, its master sent over a unix
//! socket with SCM_RIGHTS (the console-socket contract of runc), the slave made the
//! process's controlling terminal and stdio.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use super::cvt;

/// Opens a new pty pair from /dev/ptmx (the container's, once inside it).
/// TIOCGPTPEER opens the slave through the master, with no path lookup.
pub fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    let master = super::fs::open(Path::new("/dev/ptmx"), libc::O_RDWR | libc::O_NOCTTY)?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int from the pointer we pass.
    cvt(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } as libc::c_long)?;
    // SAFETY: TIOCGPTPEER returns a new descriptor; the flags are plain integers.
    let slave = cvt(unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    } as libc::c_long)?;
    // SAFETY: the kernel just created this descriptor for us.
    Ok((master, unsafe { OwnedFd::from_raw_fd(slave as RawFd) }))
}

/// Sends `fd` over the unix socket `sock` with SCM_RIGHTS; `name` is the payload.
pub fn send_fd(sock: &OwnedFd, name: &str, fd: &OwnedFd) -> io::Result<()> {
    super::send_with_fds(sock, name.as_bytes(), &[fd.as_raw_fd()])
}

/// Receives one descriptor sent with SCM_RIGHTS.
pub fn recv_fd(sock: &OwnedFd) -> io::Result<OwnedFd> {
    let (_, fds) = super::recv_with_fds(sock, 4096, 1)?;
    fds.into_iter()
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no descriptor in the message"))
}

/// Makes `slave` stdin, stdout and stderr.
pub fn dup_to_stdio(slave: &OwnedFd) -> io::Result<()> {
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; both are valid numbers.
        cvt(unsafe { libc::dup2(slave.as_raw_fd(), target) } as libc::c_long)?;
    }
    Ok(())
}

/// Connects to the console socket at `path`.
pub fn connect_console_socket(path: &Path) -> io::Result<OwnedFd> {
    let s = std::os::unix::net::UnixStream::connect(path)?;
    Ok(OwnedFd::from(s))
}

/// Sets the window size of a terminal.
pub fn set_winsize(fd: &OwnedFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the struct we pass.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } as libc::c_long).map(|_| ())
}

/// The caller's terminal in raw mode while a container's pty is attached; restored
/// on drop.
pub struct RawMode {
    fd: RawFd,
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    /// Puts `term` (the caller's stdin) in raw mode and gives the pty its size.
    pub fn enter(term: std::os::fd::BorrowedFd<'_>, pty: &OwnedFd) -> io::Result<RawMode> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let saved = tcgetattr(term).map_err(io::Error::from)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(term, SetArg::TCSANOW, &raw).map_err(io::Error::from)?;
        copy_winsize(term.as_raw_fd(), pty);
        Ok(RawMode {
            fd: term.as_raw_fd(),
            saved,
        })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: stdin stays open for the life of the process; we only borrow it.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.fd) };
        let _ = nix::sys::termios::tcsetattr(fd, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// Copies the window size of terminal `from` to the pty.
pub fn copy_winsize(from: RawFd, pty: &OwnedFd) {
    // SAFETY: winsize is plain data that TIOCGWINSZ fills in.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes into our local.
    if unsafe { libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) } == 0 {
        let _ = set_winsize(pty, ws.ws_row, ws.ws_col);
    }
}
