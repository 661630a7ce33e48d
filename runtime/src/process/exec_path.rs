//! How a container's processes are kept from reaching the host's `berth` binary
//! (CVE-2019-5736), decided once per `create` or `exec`; pure logic.
//!
//! Two ways, both closing the same hole (a container process holding the host binary
//! open and writing it after berth exits):
//! - **Trampoline** (the fast one): berth runs as installed and never shows itself to
//!   the container. init execs a tiny sealed memfd program ([`crate::sys::trampoline`])
//!   before it reports ready, and waits for `start` as that program; an `exec`'d
//!   process is cloned by that program from a helper the container cannot see. So no
//!   container process ever finds the host binary behind /proc/<pid>/exe, even with
//!   CAP_SYS_PTRACE, and /proc/self/exe is the sealed trampoline (which refuses to
//!   run as a program).
//! - **Protected binary**: berth re-executes itself from an unwritable image before
//!   doing anything, and the program is exec'd directly.
//!
//! The trampoline needs its code for this architecture and a seccomp profile that lets
//! the syscalls it makes after the filter is installed through; for init also a new pid
//! namespace (with a shared one, processes already there could reach init before it
//! becomes the trampoline: the host's pid namespace, or a joined one, where the
//! container's init is forked in as berth, holding nothing of the host but showing its
//! binary until it execs; see `init::spawn_into_pid_ns`) and no createContainer or
//! startContainer hooks (init would exec them as berth).

use crate::hooks::HookKind;
use crate::spec::{NsKind, Plan};

/// Which way this container's program is exec'd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecPath {
    /// berth already runs from an unwritable image: exec the program directly.
    Direct,
    /// Exec the program through the sealed trampoline.
    Trampoline,
    /// Re-execute berth from an unwritable image first, for this reason.
    ProtectBinary(&'static str),
}

/// What the trampoline does before it execs the program, told by its second argument
/// (see [`trampoline_argv`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrampolineMode {
    /// Exec the program at once.
    Exec,
    /// A container's init: become non-dumpable, write the `Ready` message to `ready_fd`
    /// (the channel to `create`), wait for one byte on `wait_fd` (exec.fifo, or the
    /// channel under `run`), mark both close-on-exec, exec: their closing at the exec
    /// tells `start` (or `run`) that the program runs, for poststart hooks. init is
    /// this sealed image, holding no host descriptor, while `exec`'d processes can see
    /// it.
    Wait { ready_fd: i32, wait_fd: i32 },
    /// A process `exec`'d into a container (runc's nsexec order): the caller has joined
    /// every namespace and confined itself, unseen by the container; the trampoline
    /// becomes non-dumpable and clones the process (CLONE_PARENT: a child of `berth
    /// exec`), writes its pid (4 bytes, native order) to `report_fd` and exits; the
    /// process marks `report_fd` close-on-exec (its closing tells `berth exec` the
    /// program runs), with `tty` takes its stdin as controlling terminal
    /// (setsid, TIOCSCTTY), and execs. It is born in the pid namespace as this sealed
    /// image, never as the host's berth.
    Spawn { report_fd: i32, tty: bool },
}

/// argv[0] of the trampoline when berth runs it: anything else (the program naming
/// /proc/self/exe, or a script whose interpreter it is) makes it refuse to run.
pub const TRAMPOLINE_MAGIC: &str = "berth-trampoline";

/// The trampoline's control argument (argv[1]): `x`, `w<ready>,<wait>` or
/// `s<report>[t]`.
pub fn control_arg(mode: TrampolineMode) -> String {
    match mode {
        TrampolineMode::Exec => "x".to_string(),
        TrampolineMode::Wait { ready_fd, wait_fd } => format!("w{ready_fd},{wait_fd}"),
        TrampolineMode::Spawn { report_fd, tty } => {
            format!("s{report_fd}{}", if tty { "t" } else { "" })
        }
    }
}

/// The trampoline's argv: magic, control, program path, then the program's own argv,
/// which reaches the program unchanged.
pub fn trampoline_argv(mode: TrampolineMode, path: &str, args: &[String]) -> Vec<String> {
    let mut v = vec![
        TRAMPOLINE_MAGIC.to_string(),
        control_arg(mode),
        path.to_string(),
    ];
    v.extend(args.iter().cloned());
    v
}

/// Who will use the trampoline, for [`added_syscalls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrampolineUse {
    /// A container's init ([`TrampolineMode::Wait`]).
    Init,
    /// An `exec`'d process ([`TrampolineMode::Spawn`]), with or without a terminal.
    Exec { tty: bool },
}

/// The syscalls the trampoline makes after the seccomp filter may be installed, as the
/// check sees them: (name, arguments). `trampoline_fd` is the memfd's descriptor
/// number; pointer arguments get a typical user-space address and the descriptors it
/// is handed a typical number. The final execve is not listed: every way needs it.
pub fn added_syscalls(trampoline_fd: i32, user: TrampolineUse) -> Vec<(&'static str, [u64; 6])> {
    const PTR: u64 = 0x7ffc_0000_1000;
    const FD: u64 = 4;
    let mut v = vec![
        (
            "execveat",
            [
                trampoline_fd as u64,
                PTR,
                PTR,
                PTR,
                libc::AT_EMPTY_PATH as u64,
                0,
            ],
        ),
        ("prctl", [libc::PR_SET_DUMPABLE as u64, 0, 0, 0, 0, 0]),
    ];
    match user {
        TrampolineUse::Init => {
            v.push(("write", [FD, PTR, 7, 0, 0, 0]));
            v.push(("read", [FD, PTR, 1, 0, 0, 0]));
            let cloexec = [FD, libc::F_SETFD as u64, libc::FD_CLOEXEC as u64, 0, 0, 0];
            v.push(("fcntl", cloexec));
        }
        TrampolineUse::Exec { tty } => {
            v.push(("close", [FD, 0, 0, 0, 0, 0]));
            let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as u64;
            v.push(("clone", [flags, 0, 0, 0, 0, 0]));
            v.push(("write", [FD, PTR, 4, 0, 0, 0]));
            v.push(("exit_group", [0; 6]));
            if tty {
                v.push(("setsid", [0; 6]));
                v.push(("ioctl", [0, libc::TIOCSCTTY, 0, 0, 0, 0]));
            }
        }
    }
    v
}

/// Chooses the exec path of a container's init. `protected`: berth already runs from
/// an unwritable image. `have_code`: the trampoline exists for this architecture.
/// `seccomp_allows`: whether the container's filter lets a syscall (name, arguments)
/// through; called only for [`added_syscalls`].
pub fn choose(
    plan: &Plan,
    protected: bool,
    have_code: bool,
    trampoline_fd: i32,
    seccomp_allows: impl Fn(&str, [u64; 6]) -> bool,
) -> ExecPath {
    common(
        protected,
        have_code,
        init_blocker(plan),
        plan.seccomp.is_some(),
        &added_syscalls(trampoline_fd, TrampolineUse::Init),
        seccomp_allows,
    )
}

/// What in this container keeps its init from using the trampoline.
fn init_blocker(plan: &Plan) -> Option<&'static str> {
    if !plan.namespaces.creates(NsKind::Pid) {
        return Some("no new pid namespace: other processes could reach init before it execs");
    }
    let h = plan.hooks.as_ref()?;
    (!HookKind::CreateContainer.of(h).is_empty() || !HookKind::StartContainer.of(h).is_empty())
        .then_some("createContainer/startContainer hooks are run by init")
}

/// The same choice for a process `exec`'d into a running container (`has_seccomp`: the
/// container's profile, which the process gets too; `tty`: it gets a terminal).
pub fn choose_for_exec(
    has_seccomp: bool,
    tty: bool,
    protected: bool,
    have_code: bool,
    trampoline_fd: i32,
    seccomp_allows: impl Fn(&str, [u64; 6]) -> bool,
) -> ExecPath {
    common(
        protected,
        have_code,
        None,
        has_seccomp,
        &added_syscalls(trampoline_fd, TrampolineUse::Exec { tty }),
        seccomp_allows,
    )
}

/// The checks in order: already protected, the trampoline's code, what else rules it
/// out (`blocker`), then the seccomp profile against the trampoline's `syscalls`.
fn common(
    protected: bool,
    have_code: bool,
    blocker: Option<&'static str>,
    has_seccomp: bool,
    syscalls: &[(&'static str, [u64; 6])],
    seccomp_allows: impl Fn(&str, [u64; 6]) -> bool,
) -> ExecPath {
    if protected {
        return ExecPath::Direct;
    }
    if !have_code {
        return ExecPath::ProtectBinary("no exec trampoline for this architecture");
    }
    if let Some(why) = blocker {
        return ExecPath::ProtectBinary(why);
    }
    if has_seccomp
        && !syscalls
            .iter()
            .all(|(name, args)| seccomp_allows(name, *args))
    {
        return ExecPath::ProtectBinary(
            "the seccomp profile refuses a syscall of the exec trampoline (execveat, prctl, clone, read, write, fcntl, close, setsid or ioctl)",
        );
    }
    ExecPath::Trampoline
}

/// The errno values execve(2) documents, whose messages the trampoline carries.
pub const EXECVE_ERRNOS: &[i32] = &[
    libc::E2BIG,
    libc::EACCES,
    libc::EAGAIN,
    libc::EFAULT,
    libc::EINVAL,
    libc::EIO,
    libc::EISDIR,
    libc::ELIBBAD,
    libc::ELOOP,
    libc::EMFILE,
    libc::ENAMETOOLONG,
    libc::ENFILE,
    libc::ENOENT,
    libc::ENOEXEC,
    libc::ENOMEM,
    libc::ENOTDIR,
    libc::EPERM,
    libc::ETXTBSY,
];

/// The data the trampoline's code reads, appended right after it: the magic argv[0]
/// (`{u32 len, bytes, NUL}`, the length counting the NUL), the `Ready` message init's
/// parent waits for (`{u32 len, bytes}`), padding to 4 bytes, then [`errno_table`].
pub fn data_table(magic: &str, ready: &[u8], errnos: &[i32]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&(magic.len() as u32 + 1).to_ne_bytes());
    t.extend_from_slice(magic.as_bytes());
    t.push(0);
    t.extend_from_slice(&(ready.len() as u32).to_ne_bytes());
    t.extend_from_slice(ready);
    while t.len() % 4 != 0 {
        t.push(0);
    }
    t.extend_from_slice(&errno_table(errnos));
    t
}

/// The trampoline's message table: for each errno, `{u32 errno, u32 len, text}` with
/// the text as init would print it ("No such file or directory (os error 2)\n"), then
/// a zero word.
pub fn errno_table(errnos: &[i32]) -> Vec<u8> {
    let mut t = Vec::with_capacity(errnos.len() * 48 + 4);
    for &e in errnos {
        let text = format!("{}\n", std::io::Error::from_raw_os_error(e));
        t.extend_from_slice(&(e as u32).to_ne_bytes());
        t.extend_from_slice(&(text.len() as u32).to_ne_bytes());
        t.extend_from_slice(text.as_bytes());
    }
    t.extend_from_slice(&0u32.to_ne_bytes());
    t
}

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const PHDRS: usize = 2;
/// Where the code starts in the image (and in memory, relative to the load base).
pub const CODE_OFFSET: usize = EHDR_SIZE + PHDRS * PHDR_SIZE;

/// A minimal 64-bit little-endian ELF executable: position-independent (ET_DYN, so
/// the kernel loads it at a random base), one read+execute PT_LOAD of the whole file,
/// a non-executable stack, entry at the first byte of `code`; `table` follows the code.
pub fn elf_image(machine: u16, code: &[u8], table: &[u8]) -> Vec<u8> {
    let total = CODE_OFFSET + code.len() + table.len();
    let mut b = Vec::with_capacity(total);
    // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, System V ABI, padding.
    b.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    b.extend_from_slice(&[0; 8]);
    let u16s = |b: &mut Vec<u8>, v: u16| b.extend_from_slice(&v.to_le_bytes());
    let u32s = |b: &mut Vec<u8>, v: u32| b.extend_from_slice(&v.to_le_bytes());
    let u64s = |b: &mut Vec<u8>, v: u64| b.extend_from_slice(&v.to_le_bytes());
    u16s(&mut b, 3); // e_type: ET_DYN
    u16s(&mut b, machine);
    u32s(&mut b, 1); // e_version
    u64s(&mut b, CODE_OFFSET as u64); // e_entry
    u64s(&mut b, EHDR_SIZE as u64); // e_phoff
    u64s(&mut b, 0); // e_shoff
    u32s(&mut b, 0); // e_flags
    u16s(&mut b, EHDR_SIZE as u16);
    u16s(&mut b, PHDR_SIZE as u16);
    u16s(&mut b, PHDRS as u16);
    u16s(&mut b, 64); // e_shentsize
    u16s(&mut b, 0); // e_shnum
    u16s(&mut b, 0); // e_shstrndx
    let phdr = |b: &mut Vec<u8>, kind: u32, flags: u32, size: u64, align: u64| {
        u32s(b, kind);
        u32s(b, flags);
        u64s(b, 0); // p_offset
        u64s(b, 0); // p_vaddr
        u64s(b, 0); // p_paddr
        u64s(b, size); // p_filesz
        u64s(b, size); // p_memsz
        u64s(b, align);
    };
    phdr(&mut b, 1, 0x4 | 0x1, total as u64, 0x1000); // PT_LOAD, R+X
    phdr(&mut b, 0x6474_e551, 0x4 | 0x2, 0, 16); // PT_GNU_STACK, RW
    debug_assert_eq!(b.len(), CODE_OFFSET);
    b.extend_from_slice(code);
    b.extend_from_slice(table);
    b
}

/// The trampoline's image for this host, if it has the code.
pub fn host_image() -> Option<Vec<u8>> {
    let machine = crate::sys::trampoline::ELF_MACHINE?;
    let code = crate::sys::trampoline::code()?;
    let ready = serde_json::to_vec(&crate::process::protocol::Message::Ready).ok()?;
    Some(elf_image(
        machine,
        code,
        &data_table(TRAMPOLINE_MAGIC, &ready, EXECVE_ERRNOS),
    ))
}

#[cfg(test)]
mod tests;
