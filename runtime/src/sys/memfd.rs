//! Re-executing `berth` from an unwritable copy of itself before it enters a container
//! (CVE-2019-5736 class): a container process that reaches /proc/<pid>/exe of berth (for
//! example by making its entrypoint `#!/proc/self/exe`) finds a file it cannot write,
//! never the host's binary. Three ways, cheapest first: a private read-only overlayfs of
//! the binary's directory, a read-only bind in a private mount namespace, a sealed memfd.
//! Only for containers that cannot use the exec trampoline
//! ([`crate::process::exec_path`]); sealed memfds are also made here for it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;

const MFD_CLOEXEC: u32 = 0x1;
const MFD_ALLOW_SEALING: u32 = 0x2;
const MFD_EXEC: u32 = 0x10;
const SEALS: i32 = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// True when the running binary is a sealed memfd (so it cannot be written).
pub fn running_from_sealed_memfd() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: F_GET_SEALS only reads descriptor state.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// Copies /proc/self/exe into a sealed memfd and execs it with the same arguments and
/// environment. Returns only on failure.
pub fn reexec_sealed() -> io::Error {
    match try_reexec() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

enum Never {}

fn try_reexec() -> io::Result<Never> {
    let exe = std::fs::File::open("/proc/self/exe")?;
    let len = exe.metadata()?.len();
    let mem = create_executable(c"berth")?;
    let mut copied: u64 = 0;
    while copied < len {
        // SAFETY: sendfile copies between two descriptors we hold; offset is NULL.
        let n = unsafe {
            libc::sendfile(
                mem.as_raw_fd(),
                exe.as_raw_fd(),
                std::ptr::null_mut(),
                (len - copied) as usize,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            break;
        }
        copied += n as u64;
    }
    seal(&mem)?;
    Err(exec_self_fd(&mem))
}

/// A new close-on-exec memfd that may be exec'd and sealed.
pub(crate) fn create_executable(name: &std::ffi::CStr) -> io::Result<OwnedFd> {
    // SAFETY: memfd_create reads the NUL-terminated name.
    let mut fd = unsafe {
        libc::syscall(
            libc::SYS_memfd_create,
            name.as_ptr(),
            MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC,
        )
    };
    if fd < 0 {
        // Kernels before 6.3 do not know MFD_EXEC.
        // SAFETY: as above.
        fd = unsafe {
            libc::syscall(
                libc::SYS_memfd_create,
                name.as_ptr(),
                MFD_CLOEXEC | MFD_ALLOW_SEALING,
            )
        };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Seals a memfd against any further change of its contents or size.
pub(crate) fn seal(mem: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_ADD_SEALS only changes the memfd's seal set.
    if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when the running binary cannot be written through /proc/<pid>/exe: it sits on
/// a read-only mount or is a sealed memfd.
pub fn running_protected() -> bool {
    running_from_readonly_mount() || running_from_sealed_memfd()
}

/// Re-executes berth from an unwritable image of itself, cheapest way first: a private
/// read-only overlay of its directory (`/run/berth-exe-lower` as the empty second
/// layer), a read-only bind in a private mount namespace, a sealed memfd copy. The new
/// process starts over with the same arguments and finds itself protected. Returns only
/// when all three failed, with the last error.
pub fn reexec_protected() -> io::Error {
    // The overlay's second, empty layer: outside the default --root, where it could be
    // taken for a container.
    let _ = reexec_readonly_overlay(std::path::Path::new("/run/berth-exe-lower"));
    let _ = reexec_readonly_bind();
    reexec_sealed()
}

/// True when the running binary sits on a read-only mount: then nothing can write it
/// through /proc/<pid>/exe (EROFS), whatever a container process tries.
pub fn running_from_readonly_mount() -> bool {
    super::fs::mount_flags_of(std::path::Path::new("/proc/self/exe"))
        .is_ok_and(|f| f & libc::MS_RDONLY != 0)
}

/// The cheapest protection: a private, detached overlayfs whose only layers are the
/// binary's directory and an empty one (`dummy_lower`, created if missing). An overlay
/// without an upper layer is read-only at the superblock: no remount or mount_setattr
/// can make it writable, and it is attached nowhere a container could reach. The binary
/// is exec'd from there with execveat, so /proc/self/exe names that overlay's copy.
/// Unlike the private-namespace bind below, no mount namespace is copied (the cost of
/// which grows with the host's mount count) and none is torn down at exit. Needs the
/// new mount API (Linux 5.2) and overlayfs; returns only on failure.
pub fn reexec_readonly_overlay(dummy_lower: &std::path::Path) -> io::Error {
    match try_readonly_overlay(dummy_lower) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn try_readonly_overlay(dummy_lower: &std::path::Path) -> io::Result<Never> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: libc::c_uint = 0x1;
    const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
    const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;

    let exe = std::fs::read_link("/proc/self/exe")?;
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    };
    if !exe.is_absolute() || exe.to_string_lossy().ends_with(" (deleted)") {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dummy_lower)?;
    // ':' separates layers and '\' escapes; the binary's directory goes on top.
    let escape = |p: &std::path::Path| {
        p.to_string_lossy()
            .replace('\\', "\\\\")
            .replace(':', "\\:")
    };
    let lower = CString::new(format!("{}:{}", escape(dir), escape(dummy_lower)))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let cvt = |r: libc::c_long| -> io::Result<libc::c_long> {
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // SAFETY: fsopen reads a NUL-terminated name; the result is a new descriptor.
    let ctx = cvt(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })?;
    // SAFETY: we own the descriptor fsopen just returned.
    let ctx = unsafe { OwnedFd::from_raw_fd(ctx as i32) };
    let set = |key: &std::ffi::CStr, value: &std::ffi::CStr| {
        // SAFETY: key and value are NUL-terminated strings that outlive the call.
        cvt(unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                ctx.as_raw_fd(),
                FSCONFIG_SET_STRING,
                key.as_ptr(),
                value.as_ptr(),
                0,
            )
        })
    };
    set(c"lowerdir", &lower)?;
    // Inode number remapping is not needed; disabling it avoids kernel log noise when
    // the two layers are on different filesystems.
    let _ = set(c"xino", c"off");
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    // SAFETY: fsmount takes the context descriptor and flag words only.
    let mnt = cvt(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        )
    })?;
    // SAFETY: we own the descriptor fsmount just returned.
    let mnt = unsafe { OwnedFd::from_raw_fd(mnt as i32) };
    let name =
        CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: openat reads the NUL-terminated name relative to a descriptor we hold.
    let bin = cvt(unsafe {
        libc::openat(
            mnt.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    } as libc::c_long)?;
    // SAFETY: we own the descriptor openat just returned.
    let bin = unsafe { OwnedFd::from_raw_fd(bin as i32) };
    Err(exec_self_fd(&bin))
}

/// The cheaper protection: in a private mount namespace of this process (slave of the
/// host, so nothing propagates back), bind-mount the binary read-only over itself and
/// re-exec it from there. /proc/self/exe then names a read-only mount that no
/// container can reach or remount. No copy of the binary is made. Returns only on
/// failure (the caller falls back to the sealed memfd).
pub fn reexec_readonly_bind() -> io::Error {
    match try_readonly_bind() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn try_readonly_bind() -> io::Result<Never> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    if !exe.is_absolute() || exe.to_string_lossy().ends_with(" (deleted)") {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    super::unshare(libc::CLONE_NEWNS)?;
    let root = std::path::Path::new("/");
    super::mount::mount(None, root, None, libc::MS_REC | libc::MS_SLAVE, None)?;
    let s = exe.to_string_lossy();
    super::mount::mount(Some(&s), &exe, None, libc::MS_BIND, None)?;
    let flags =
        super::fs::mount_flags_of(&exe)? | libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
    super::mount::mount(None, &exe, None, flags, None)?;
    let err = exec_self(
        &CString::new(exe.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
    );
    Err(err)
}

/// This process's arguments and environment, for re-executing itself.
fn own_args_and_env() -> (Vec<CString>, Vec<CString>) {
    let args = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_default())
        .collect();
    let envs = std::env::vars_os()
        .map(|(k, v)| {
            let mut b = k.as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            CString::new(b).unwrap_or_default()
        })
        .collect();
    (args, envs)
}

/// execveat(fd, "", AT_EMPTY_PATH) with our own arguments and environment: runs the
/// file `fd` refers to (a memfd, or an O_PATH descriptor). Returns only on failure.
fn exec_self_fd(fd: &OwnedFd) -> io::Error {
    let (args, envs) = own_args_and_env();
    super::execveat_fd(fd, args.iter().map(CString::as_c_str), &envs)
}

/// execve(path) with our own arguments and environment.
fn exec_self(path: &CString) -> io::Error {
    let (args, envs) = own_args_and_env();
    match nix::unistd::execve(path, &args, &envs) {
        Ok(never) => match never {},
        Err(e) => e.into(),
    }
}
