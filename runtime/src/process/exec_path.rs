//! How init's exec is kept from reaching the host's `berth` binary (CVE-2019-5736),
//! decided once per `create` from the container's plan; pure logic.
//!
//! Two ways, both closing the same hole (a container process holding the host binary
//! open and writing it after berth exits):
//! - **Trampoline** (the fast one): berth runs as installed; the process that enters
//!   the container is non-dumpable whenever another process could see it (init turns
//!   so before any other can enter its pid namespace; an `exec`'d process is born so),
//!   and it execs the program through a tiny sealed memfd program
//!   ([`crate::sys::trampoline`]), so /proc/self/exe is never the host binary after an
//!   exec.
//! - **Protected binary**: berth re-executes itself from an unwritable image before
//!   doing anything, and the program is exec'd directly.
//!
//! The trampoline needs its code for this architecture and a seccomp profile that lets
//! the syscalls it adds after the filter is installed through; for init also a new pid
//! namespace (with a shared one, processes already there could reach init before it
//! turns non-dumpable) and no createContainer or startContainer hooks (init would exec
//! them as berth).

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

/// The syscalls the trampoline path adds after the seccomp filter may be installed, as
/// the check sees them: (name, arguments). `trampoline_fd` is the memfd's descriptor
/// number; pointer arguments get a typical user-space address. Init also turns
/// non-dumpable then (an `exec`'d process is born so, before any filter).
pub fn added_syscalls(trampoline_fd: i32, for_init: bool) -> Vec<(&'static str, [u64; 6])> {
    const PTR: u64 = 0x7ffc_0000_1000;
    let mut v = vec![(
        "execveat",
        [
            trampoline_fd as u64,
            PTR,
            PTR,
            PTR,
            libc::AT_EMPTY_PATH as u64,
            0,
        ],
    )];
    if for_init {
        v.push(("prctl", [libc::PR_SET_DUMPABLE as u64, 0, 0, 0, 0, 0]));
    }
    v
}

/// Chooses the exec path. `protected`: berth already runs from an unwritable image.
/// `have_code`: the trampoline exists for this architecture. `seccomp_allows`: whether
/// the container's filter lets a syscall (name, arguments) through; called only for
/// [`added_syscalls`].
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
        trampoline_fd,
        true,
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
/// container's profile, which the process gets too).
pub fn choose_for_exec(
    has_seccomp: bool,
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
        trampoline_fd,
        false,
        seccomp_allows,
    )
}

/// The checks in order: already protected, the trampoline's code, what else rules it
/// out (`blocker`), then the seccomp profile.
fn common(
    protected: bool,
    have_code: bool,
    blocker: Option<&'static str>,
    has_seccomp: bool,
    trampoline_fd: i32,
    for_init: bool,
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
        && !added_syscalls(trampoline_fd, for_init)
            .iter()
            .all(|(name, args)| seccomp_allows(name, *args))
    {
        return ExecPath::ProtectBinary(if for_init {
            "the seccomp profile does not allow execveat or prctl(PR_SET_DUMPABLE)"
        } else {
            "the seccomp profile does not allow execveat"
        });
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
    Some(elf_image(machine, code, &errno_table(EXECVE_ERRNOS)))
}

#[cfg(test)]
mod tests;
