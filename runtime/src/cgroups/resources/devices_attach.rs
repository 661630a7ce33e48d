//! Loading a device program and attaching it to a cgroup v2 directory: the bpf(2) seam.
//!
//! The new program is attached (BPF_F_ALLOW_MULTI) before the ones attached earlier
//! are detached, so an update never leaves a window without device control.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::devices_bpf::BpfInsn;
use super::ResourceError;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a #[repr(C)] prefix of the kernel's union bpf_attr for `cmd`,
    // valid for its whole size; pointers inside it point to live buffers of the
    // lengths given (checked by each caller).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn err(dir: &Path, step: &str, e: std::io::Error) -> ResourceError {
    ResourceError::Read {
        path: dir.to_path_buf(),
        reason: format!("{step} (device eBPF program): {e}"),
    }
}

fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: bpf() returned a new file descriptor that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// Loads the program without a verifier log first (the log costs the verifier's time
/// and a 64 KiB buffer on every container start); only a refused program is loaded
/// again with the log, to say why.
fn load(dir: &Path, prog: &[BpfInsn]) -> Result<OwnedFd, ResourceError> {
    match load_with_log(prog, None) {
        Ok(fd) => Ok(fd),
        Err(_) => {
            let mut log = vec![0u8; 64 * 1024];
            match load_with_log(prog, Some(&mut log)) {
                Ok(fd) => Ok(fd),
                Err(e) => {
                    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
                    let verifier = String::from_utf8_lossy(&log[..end]).trim().to_string();
                    Err(err(dir, &format!("loading (verifier: {verifier})"), e))
                }
            }
        }
    }
}

fn load_with_log(prog: &[BpfInsn], log: Option<&mut Vec<u8>>) -> std::io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    if let Some(log) = log {
        attr.log_level = 1;
        attr.log_size = log.len() as u32;
        attr.log_buf = log.as_mut_ptr() as u64;
    }
    attr.prog_name[..12].copy_from_slice(b"berth_devcg\0");
    bpf(BPF_PROG_LOAD, &mut attr).map(owned)
}

fn attached(dir: &Path, cg: &OwnedFd) -> Result<Vec<u32>, ResourceError> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut attr).map_err(|e| err(dir, "querying attached programs", e))?;
    ids.truncate(attr.prog_cnt as usize);
    Ok(ids)
}

/// Attaches `prog` to the cgroup v2 directory `dir`, then detaches the device
/// programs that were attached before.
pub fn attach(dir: &Path, prog: &[BpfInsn]) -> Result<(), ResourceError> {
    let cg: OwnedFd = std::fs::File::open(dir)
        .map_err(|e| err(dir, "opening the cgroup", e))?
        .into();
    let old = attached(dir, &cg)?;
    let p = load(dir, prog)?;
    let mut a = AttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: p.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    bpf(BPF_PROG_ATTACH, &mut a).map_err(|e| err(dir, "attaching", e))?;
    for id in old {
        let mut g = GetFdAttr {
            prog_id: id,
            ..Default::default()
        };
        let fd = owned(
            bpf(BPF_PROG_GET_FD_BY_ID, &mut g)
                .map_err(|e| err(dir, "opening an old program", e))?,
        );
        let mut d = AttachAttr {
            target_fd: cg.as_raw_fd() as u32,
            attach_bpf_fd: fd.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            ..Default::default()
        };
        bpf(BPF_PROG_DETACH, &mut d).map_err(|e| err(dir, "detaching an old program", e))?;
    }
    Ok(())
}

/// How many device programs are attached to `dir` (for tests and diagnostics).
pub fn attached_count(dir: &Path) -> Result<usize, ResourceError> {
    let cg: OwnedFd = std::fs::File::open(dir)
        .map_err(|e| err(dir, "opening the cgroup", e))?
        .into();
    Ok(attached(dir, &cg)?.len())
}

#[cfg(test)]
mod tests {
    use super::super::devices_bpf::{program, rules};
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroup;

    /// Real kernel (root, any cgroup2 mount, e.g. the hybrid host's controller-less
    /// /sys/fs/cgroup/unified): a process in the cgroup cannot open /dev/null once the
    /// program denies it, and can open /dev/zero, which it allows.
    #[test]
    fn real_device_program_denies_and_allows() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("real_device_program_denies_and_allows needs root");
        }
        let layout = crate::cgroups::detect().unwrap();
        let mount = match &layout {
            crate::cgroups::Layout::V2 { mount } => mount.clone(),
            crate::cgroups::Layout::Hybrid { unified, .. } => unified.clone(),
            crate::cgroups::Layout::V1 { .. } => {
                panic!("needs a cgroup2 mount (hybrid or v2 host)")
            }
        };
        let dir = mount.join(format!("berth-devtest-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        struct Guard(std::path::PathBuf);
        impl Drop for Guard {
            fn drop(&mut self) {
                // The kernel frees an emptied cgroup shortly after its last task exits.
                for _ in 0..100 {
                    if std::fs::remove_dir(&self.0).is_ok() || !self.0.exists() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
        let g = Guard(dir.clone());
        let devs: Vec<LinuxDeviceCgroup> = serde_json::from_str(
            r#"[{"allow":false,"access":"rwm"},
                {"allow":true,"type":"c","major":1,"minor":5,"access":"rwm"}]"#,
        )
        .unwrap();
        let prog = program(&rules(&devs).unwrap()).unwrap();
        attach(&g.0, &prog).unwrap();
        // Re-attaching replaces: still exactly one program.
        attach(&g.0, &prog).unwrap();
        assert_eq!(attached_count(&g.0).unwrap(), 1);

        let procs = std::ffi::CString::new(
            dir.join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .unwrap();
        // SAFETY: the child only makes raw syscalls on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: raw syscalls on valid NUL-terminated paths and a stack buffer.
            let code = unsafe {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                let ok = fd >= 0 && libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                if !ok {
                    3
                } else {
                    let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY);
                    let null_errno = *libc::__errno_location();
                    let zero = libc::open(c"/dev/zero".as_ptr(), libc::O_RDONLY);
                    match (null < 0 && null_errno == libc::EPERM, zero >= 0) {
                        (true, true) => 0,
                        (false, _) => 1,
                        (_, false) => 2,
                    }
                }
            };
            // SAFETY: ends the forked child without running the parent's handlers.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status));
        match libc::WEXITSTATUS(status) {
            0 => {}
            1 => panic!(
                "/dev/null could be opened (or failed with another errno) despite the deny rule"
            ),
            2 => panic!("/dev/zero could not be opened despite the allow rule"),
            c => panic!("child could not join the cgroup (exit {c})"),
        }
        drop(g);
    }
}
