//! The exec trampoline's machine code, its sealed memfd, and the execveat into it.
//!
//! The container's init is a clone of `berth` and runs the host's binary until it
//! execs the program. Were that exec to land on the host binary (the program path
//! being /proc/self/exe, or a `#!/proc/self/exe` script: CVE-2019-5736), a container
//! process could hold the host's binary open and write it once berth exits. Instead of
//! re-executing all of berth from an unwritable copy before it starts (about 0.75 ms per
//! container), init execs a sealed memfd holding this few-hundred-byte program, which
//! only calls execve(argv[0], argv + 1, envp): /proc/self/exe is then the sealed copy
//! whatever the program path says. The ELF image around the code is built by
//! [`crate::process::exec_path::elf_image`].
//!
//! On failure the code prints `berth init: exec <path>: <message>` to stderr, where the
//! message comes from a table appended right after the code (`{u32 errno, u32 len,
//! text}`..., then a zero word; see [`crate::process::exec_path::errno_table`]), or
//! `os error N` for an errno not in it, and exits 127, as init's own exec failure does.

use std::io;
use std::os::fd::OwnedFd;

/// The ELF machine of the code below, for architectures that have it.
#[cfg(target_arch = "x86_64")]
pub const ELF_MACHINE: Option<u16> = Some(62); // EM_X86_64
#[cfg(not(target_arch = "x86_64"))]
pub const ELF_MACHINE: Option<u16> = None;

// Position-independent x86_64 code, kept as data in .rodata: it is copied into the
// memfd image, never run inside berth. Entered without a dynamic loader, with
// rsp -> argc, argv[0..argc], NULL, envp..., NULL.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".pushsection .rodata.berth_trampoline,\"a\",@progbits",
    ".p2align 4",
    ".globl berth_trampoline_code",
    ".hidden berth_trampoline_code",
    "berth_trampoline_code:",
    "mov r12, qword ptr [rsp]",
    "test r12, r12",
    "jz .Lbt_noprog",
    // execve(argv[0], argv + 1, envp)
    "mov r13, qword ptr [rsp + 8]",
    "mov rdi, r13",
    "lea rsi, [rsp + 16]",
    "lea rdx, [rsp + 8*r12 + 16]",
    "mov eax, 59",
    "syscall",
    // Failed: rax = -errno.
    "mov r14, rax",
    "neg r14",
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
    // Look the errno up in the table appended after the code.
    "lea rbx, [rip + .Lbt_table]",
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
    "sub rsp, 32",
    "lea rdi, [rsp + 31]",
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
    "lea rdx, [rsp + 31]",
    "sub rdx, rdi",
    "inc rdx",
    "call .Lbt_write",
    "jmp .Lbt_exit",
    ".Lbt_noprog:",
    "lea rsi, [rip + .Lbt_noprog_msg]",
    "mov edx, 36",
    "call .Lbt_write",
    // exit_group(127)
    ".Lbt_exit:",
    "mov edi, 127",
    "mov eax, 231",
    "syscall",
    "ud2",
    // write(2, rsi, rdx); clobbers rax, rcx, rdi, r11.
    ".Lbt_write:",
    "mov edi, 2",
    "mov eax, 1",
    "syscall",
    "ret",
    ".Lbt_prefix: .ascii \"berth init: exec \"",
    ".Lbt_colon: .ascii \": \"",
    ".Lbt_oserr: .ascii \"os error \"",
    ".Lbt_noprog_msg: .ascii \"berth init: exec: no program to run\\n\"",
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

/// execveat(trampoline, "", AT_EMPTY_PATH) with argv `path, args...`: the trampoline
/// then execs `path` with `args` and `env`. Returns only on failure.
pub fn exec(
    trampoline: &OwnedFd,
    path: &std::ffi::CStr,
    args: &[std::ffi::CString],
    env: &[std::ffi::CString],
) -> io::Error {
    let argv = std::iter::once(path).chain(args.iter().map(std::ffi::CString::as_c_str));
    super::execveat_fd(trampoline, argv, env)
}
