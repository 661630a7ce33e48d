//! mount(2), umount2(2) and pivot_root(2).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// mount(2); `None` arguments are passed as NULL.
pub fn mount(
    source: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> io::Result<()> {
    let src = source.map(|s| c(s.as_bytes())).transpose()?;
    let tgt = c(target.as_os_str().as_bytes())?;
    let fst = fstype.map(|s| c(s.as_bytes())).transpose()?;
    let dat = data
        .filter(|d| !d.is_empty())
        .map(|s| c(s.as_bytes()))
        .transpose()?;
    // SAFETY: every pointer is either NULL or a NUL-terminated string that lives
    // until the call returns.
    let r = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            tgt.as_ptr(),
            fst.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags as libc::c_ulong,
            dat.as_ref().map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// umount2(2).
pub fn umount2(target: &Path, flags: i32) -> io::Result<()> {
    let tgt = c(target.as_os_str().as_bytes())?;
    // SAFETY: umount2 reads the NUL-terminated path.
    if unsafe { libc::umount2(tgt.as_ptr(), flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// pivot_root(".", "."): with the new root as the cwd, stacks the old root on top of
/// it, to be detached right after (no put_old directory needed).
pub fn pivot_root_dot() -> io::Result<()> {
    let dot = c(b".")?;
    // SAFETY: pivot_root reads two NUL-terminated paths.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// chroot(2).
pub fn chroot(path: &Path) -> io::Result<()> {
    let p = c(path.as_os_str().as_bytes())?;
    // SAFETY: chroot reads the NUL-terminated path.
    if unsafe { libc::chroot(p.as_ptr()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
