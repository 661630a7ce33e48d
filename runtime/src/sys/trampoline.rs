//! The exec trampoline's machine code, its sealed memfd, and the execveat into it.
//!
//! The container's init and a process `exec`'d into a container start as clones of
//! `berth` and run the host's binary until they exec. Were a container process to
//! see them then (through /proc/<pid>/exe, with CAP_SYS_PTRACE even when they are
//! non-dumpable), or were their exec to land on the host binary (the program path
//! /proc/self/exe, or a `#!/proc/self/exe` script: CVE-2019-5736), it could hold the
//! host's binary open and write it once berth exits. Instead of re-executing all of
//! berth from an unwritable copy (about 0.75 ms per container), they exec a sealed
//! memfd holding this few-hundred-byte program before any container process can see
//! them, and it execs the program: /proc/<pid>/exe is then the sealed copy. The ELF
//! image around the code is built by [`crate::process::exec_path::elf_image`].
//!
//! Its argv is `berth-trampoline CONTROL PATH ARGV...` (see
//! [`crate::process::exec_path::trampoline_argv`]); the program gets ARGV unchanged.
//! CONTROL says what to do first ([`crate::process::exec_path::TrampolineMode`]):
//! `x` nothing; `w<r>,<w>` (init) write the `Ready` message to descriptor r, wait for
//! a byte on w, mark both close-on-exec; `s<fd>[t]` (exec) clone the process with CLONE_PARENT,
//! write its pid to fd and exit, while the process marks fd close-on-exec, with `t` takes
//! its terminal, and execs. Started any other way (argv[0] is not the magic: the program
//! was /proc/self/exe, or a script it interprets), it refuses, instead of taking its
//! arguments for a program and running itself again.
//!
//! On failure the code prints `berth init: exec <path>: <message>` to stderr, where the
//! message comes from the table appended right after the code (the magic, the `Ready`
//! message, then `{u32 errno, u32 len, text}`..., then a zero word; see
//! [`crate::process::exec_path::data_table`]), or `os error N` for an errno not in it,
//! and exits 127, as init's own exec failure does.

use std::io;
use std::os::fd::OwnedFd;

use crate::process::exec_path::TrampolineMode;

/// The ELF machine of the code below, for architectures that have it.
#[cfg(target_arch = "x86_64")]
pub const ELF_MACHINE: Option<u16> = Some(62); // EM_X86_64
#[cfg(not(target_arch = "x86_64"))]
pub const ELF_MACHINE: Option<u16> = None;

// Position-independent x86_64 code, kept as data in .rodata: it is copied into the
// memfd image, never run inside berth. Entered without a dynamic loader, with
// rsp -> argc, argv[0..argc], NULL, envp..., NULL. Registers kept across the code:
// r15 argv, rbp envp, rbx the data table, r13 a descriptor or the name in an error,
// r14 the ready record, then an errno; [rsp+8] and [rsp+16] are scratch.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .rodata.berth_trampoline,\"a\",@progbits",
    ".p2align 4",
    ".globl berth_trampoline_code",
    ".hidden berth_trampoline_code",
    "berth_trampoline_code:",
    "mov r12, qword ptr [rsp]",
    "lea r15, [rsp + 8]",
    "lea rbp, [r15 + 8*r12 + 8]",
    "and rsp, -16",
    "sub rsp, 64",
    "lea rbx, [rip + .Lbt_table]",
    "cmp r12, 3",
    "jb .Lbt_reenter",
    // argv[0] must be the magic (length in the table counts its NUL).
    "mov rsi, qword ptr [r15]",
    "mov ecx, dword ptr [rbx]",
    "lea rdi, [rbx + 4]",
    ".Lbt_cmp:",
    "mov al, byte ptr [rsi]",
    "cmp al, byte ptr [rdi]",
    "jne .Lbt_reenter",
    "inc rsi",
    "inc rdi",
    "dec ecx",
    "jnz .Lbt_cmp",
    "mov r14, rdi",
    "mov rsi, qword ptr [r15 + 8]",
    "movzx eax, byte ptr [rsi]",
    "inc rsi",
    "cmp al, 0x78", // 'x'
    "je .Lbt_exec",
    "cmp al, 0x77", // 'w'
    "je .Lbt_wait",
    "cmp al, 0x73", // 's'
    "je .Lbt_spawn",
    "jmp .Lbt_reenter",
    // w<ready>,<wait>
    ".Lbt_wait:",
    "call .Lbt_num",
    "mov r13, rax",
    "inc rsi",
    "call .Lbt_num",
    "mov qword ptr [rsp + 8], rax",
    "call .Lbt_nodump",
    "mov edi, r13d",
    "lea rsi, [r14 + 4]",
    "mov edx, dword ptr [r14]",
    "mov eax, 1",
    "syscall",
    "test rax, rax",
    "js .Lbt_gone",
    ".Lbt_read:",
    "mov rdi, qword ptr [rsp + 8]",
    "lea rsi, [rsp + 16]",
    "mov edx, 1",
    "xor eax, eax",
    "syscall",
    "cmp rax, -4",
    "je .Lbt_read",
    "cmp rax, 1",
    "jne .Lbt_gone",
    // Both close at the exec (fcntl F_SETFD FD_CLOEXEC), not before: their closing
    // tells `berth start` / `run` that the program runs (poststart comes after).
    "mov edi, r13d",
    "mov esi, 2",
    "mov edx, 1",
    "mov eax, 72",
    "syscall",
    "mov rdi, qword ptr [rsp + 8]",
    "mov esi, 2",
    "mov edx, 1",
    "mov eax, 72",
    "syscall",
    "jmp .Lbt_exec",
    // s<report>[t]
    ".Lbt_spawn:",
    "call .Lbt_num",
    "mov r13, rax",
    "movzx eax, byte ptr [rsi]",
    "mov qword ptr [rsp + 8], rax",
    "call .Lbt_nodump",
    // clone(CLONE_PARENT | SIGCHLD, no new stack): fork-like.
    "mov edi, 0x8011",
    "xor esi, esi",
    "xor edx, edx",
    "xor r10d, r10d",
    "xor r8d, r8d",
    "mov eax, 56",
    "syscall",
    "test rax, rax",
    "js .Lbt_clone_failed",
    "jz .Lbt_child",
    "mov dword ptr [rsp + 16], eax",
    "mov edi, r13d",
    "lea rsi, [rsp + 16]",
    "mov edx, 4",
    "mov eax, 1",
    "syscall",
    "xor edi, edi",
    "mov eax, 231",
    "syscall",
    // The report descriptor closes at the exec (F_SETFD FD_CLOEXEC): `berth exec`
    // waits for that, so the program runs when it returns, as with runc.
    ".Lbt_child:",
    "mov edi, r13d",
    "mov esi, 2",
    "mov edx, 1",
    "mov eax, 72",
    "syscall",
    "cmp qword ptr [rsp + 8], 0x74", // 't'
    "jne .Lbt_exec",
    "mov eax, 112", // setsid
    "syscall",
    "xor edi, edi",
    "mov esi, 0x540e", // TIOCSCTTY on stdin
    "xor edx, edx",
    "mov eax, 16",
    "syscall",
    "test rax, rax",
    "jns .Lbt_exec",
    "mov r14, rax",
    "neg r14",
    "lea r13, [rip + .Lbt_ctty_name]",
    "jmp .Lbt_fail",
    ".Lbt_clone_failed:",
    "mov r14, rax",
    "neg r14",
    "lea r13, [rip + .Lbt_clone_name]",
    "jmp .Lbt_fail",
    // execve(argv[2], argv + 3, envp)
    ".Lbt_exec:",
    "mov r13, qword ptr [r15 + 16]",
    "mov rdi, r13",
    "lea rsi, [r15 + 24]",
    "mov rdx, rbp",
    "mov eax, 59",
    "syscall",
    "mov r14, rax",
    "neg r14",
    // "berth init: exec <r13>: <message for errno r14>", exit 127.
    ".Lbt_fail:",
    "lea rsi, [rip + .Lbt_prefix]",
    "mov edx, 17",
    "call .Lbt_write",
    "mov rsi, r13",
    "xor edx, edx",
    ".Lbt_strlen:",
    "cmp byte ptr [rsi + rdx], 0",
    "je .Lbt_strlen_done",
    "inc rdx",
    "jmp .Lbt_strlen",
    ".Lbt_strlen_done:",
    "call .Lbt_write",
    "lea rsi, [rip + .Lbt_colon]",
    "mov edx, 2",
    "call .Lbt_write",
    // The errno table follows the magic and ready records, 4-aligned.
    "mov eax, dword ptr [rbx]",
    "lea rbx, [rbx + rax + 4]",
    "mov eax, dword ptr [rbx]",
    "lea rbx, [rbx + rax + 7]",
    "and rbx, -4",
    ".Lbt_find:",
    "mov eax, dword ptr [rbx]",
    "test eax, eax",
    "jz .Lbt_number",
    "mov edx, dword ptr [rbx + 4]",
    "cmp rax, r14",
    "je .Lbt_found",
    "lea rbx, [rbx + rdx + 8]",
    "jmp .Lbt_find",
    ".Lbt_found:",
    "lea rsi, [rbx + 8]",
    "call .Lbt_write",
    "jmp .Lbt_exit",
    // Not in the table: "os error N\n", the digits built backwards on the stack.
    ".Lbt_number:",
    "lea rsi, [rip + .Lbt_oserr]",
    "mov edx, 9",
    "call .Lbt_write",
    "lea rdi, [rsp + 63]",
    "mov byte ptr [rdi], 10",
    "mov rax, r14",
    "mov ecx, 10",
    ".Lbt_digit:",
    "xor edx, edx",
    "div rcx",
    "add dl, 48",
    "dec rdi",
    "mov byte ptr [rdi], dl",
    "test rax, rax",
    "jnz .Lbt_digit",
    "mov rsi, rdi",
    "lea rdx, [rsp + 63]",
    "sub rdx, rdi",
    "inc rdx",
    "call .Lbt_write",
    "jmp .Lbt_exit",
    // Not started by berth: say so once, never run itself again.
    ".Lbt_reenter:",
    "lea rsi, [rip + .Lbt_reenter_msg]",
    "lea rdx, [rip + .Lbt_reenter_end]",
    "sub rdx, rsi",
    "call .Lbt_write",
    // exit_group(127)
    ".Lbt_exit:",
    "mov edi, 127",
    "mov eax, 231",
    "syscall",
    "ud2",
    // The parent went away before start: nothing to run for.
    ".Lbt_gone:",
    "mov edi, 1",
    "mov eax, 231",
    "syscall",
    "ud2",
    // rax = the decimal number at rsi, which is left after its last digit.
    ".Lbt_num:",
    "xor eax, eax",
    ".Lbt_num_loop:",
    "movzx ecx, byte ptr [rsi]",
    "sub ecx, 48",
    "cmp ecx, 9",
    "ja .Lbt_num_done",
    "imul rax, rax, 10",
    "add rax, rcx",
    "inc rsi",
    "jmp .Lbt_num_loop",
    ".Lbt_num_done:",
    "ret",
    // prctl(PR_SET_DUMPABLE, 0): out of reach of the container's processes without
    // CAP_SYS_PTRACE; clobbers rax, rcx, rdx, rsi, rdi, r8, r10, r11.
    ".Lbt_nodump:",
    "mov edi, 4",
    "xor esi, esi",
    "xor edx, edx",
    "xor r10d, r10d",
    "xor r8d, r8d",
    "mov eax, 157",
    "syscall",
    "ret",
    // write(2, rsi, rdx); clobbers rax, rcx, rdi, r11.
    ".Lbt_write:",
    "mov edi, 2",
    "mov eax, 1",
    "syscall",
    "ret",
    ".Lbt_prefix: .ascii \"berth init: exec \"",
    ".Lbt_colon: .ascii \": \"",
    ".Lbt_oserr: .ascii \"os error \"",
    ".Lbt_clone_name: .asciz \"(clone of the process)\"",
    ".Lbt_ctty_name: .asciz \"(TIOCSCTTY on stdin)\"",
    ".Lbt_reenter_msg: .ascii \"berth: refusing to run berth's exec trampoline as a program (/proc/self/exe, or a script it interprets)\\n\"",
    ".Lbt_reenter_end:",
    ".p2align 2",
    ".Lbt_table:",
    ".globl berth_trampoline_code_end",
    ".hidden berth_trampoline_code_end",
    "berth_trampoline_code_end:",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
extern "C" {
    static berth_trampoline_code: u8;
    static berth_trampoline_code_end: u8;
}

/// The trampoline's code bytes (the errno table goes right after them), if this
/// architecture has it.
pub fn code() -> Option<&'static [u8]> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: both symbols are defined by the global_asm! above, in one read-only
        // section, the start before the end; the bytes between are immutable data.
        let code = unsafe {
            let start = std::ptr::addr_of!(berth_trampoline_code);
            let end = std::ptr::addr_of!(berth_trampoline_code_end);
            std::slice::from_raw_parts(start, end.offset_from(start) as usize)
        };
        Some(code)
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// A sealed, close-on-exec memfd holding `image`: nothing can change it once made.
pub fn sealed_memfd(image: &[u8]) -> io::Result<OwnedFd> {
    let mem = super::memfd::create_executable(c"berth-exec")?;
    let mut f = std::fs::File::from(mem);
    std::io::Write::write_all(&mut f, image)?;
    let mem = OwnedFd::from(f);
    super::memfd::seal(&mem)?;
    Ok(mem)
}

/// execveat(trampoline, "", AT_EMPTY_PATH) with the trampoline's argv for `mode`
/// (magic, control, `path`, `args`) and `env`: the trampoline then does what `mode`
/// says and execs `path` with `args` and `env`. The descriptors `mode` names must not
/// be close-on-exec. Returns only on failure.
pub fn exec(
    trampoline: &OwnedFd,
    mode: TrampolineMode,
    path: &std::ffi::CStr,
    args: &[std::ffi::CString],
    env: &[std::ffi::CString],
) -> io::Error {
    let magic = std::ffi::CString::new(crate::process::exec_path::TRAMPOLINE_MAGIC);
    let control = std::ffi::CString::new(crate::process::exec_path::control_arg(mode));
    let (Ok(magic), Ok(control)) = (magic, control) else {
        return io::Error::from_raw_os_error(libc::EINVAL);
    };
    let argv = [magic.as_c_str(), control.as_c_str(), path]
        .into_iter()
        .chain(args.iter().map(std::ffi::CString::as_c_str));
    super::execveat_fd(trampoline, argv, env)
}
