//! A cache of compiled filters on disk, keyed by a hash of the profile.
//!
//! Key: sha256 over a format tag, Berth's version and translation revision, each ABI the
//! profile is translated for and its syscall table size, and the canonical JSON of the
//! `LinuxSeccomp` (oci-spec serialises its fields in a fixed order and the profile holds
//! no maps). Entry: `<dir>/<key>.bpf`,
//! written to a temp name and renamed into place. An entry is trusted only if its
//! magic, its embedded key, its lengths and its trailing sha256 all check out;
//! otherwise it is recompiled and replaced.
//!
//! Entry layout (little endian): magic `BRTHBPF2` | key (32) | flags u32 |
//! instruction count u32, then per instruction code u16, jt u8, jf u8, k u32 | sha256
//! of everything before (32).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::compile::Insn as sock_filter;
use oci_spec::runtime::LinuxSeccomp;
use sha2::{Digest, Sha256};

use super::arch::SyscallArch;
use super::compile::{compile, CompiledFilter};
use super::plan::{abis, plan_all};
use super::SeccompError;

const MAGIC: &[u8; 8] = b"BRTHBPF2";

/// Bump whenever the translation (plan/compile) changes what it emits, so entries
/// written by an older build of the same version are not reused.
const TRANSLATION_REVISION: u32 = 2;

/// The cache key of a profile for the ABIs it is translated for (hex sha256).
pub fn cache_key(profile: &LinuxSeccomp, abis: &[SyscallArch]) -> Result<String, SeccompError> {
    let json = serde_json::to_vec(profile).map_err(|e| SeccompError::Compile {
        what: "canonical profile JSON".into(),
        reason: e.to_string(),
    })?;
    let mut h = Sha256::new();
    h.update(MAGIC);
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(TRANSLATION_REVISION.to_le_bytes());
    for arch in abis {
        h.update([0]);
        h.update(arch.name().as_bytes());
        h.update((arch.table_len() as u64).to_le_bytes());
    }
    h.update([1]);
    h.update(json);
    Ok(hex::encode(h.finalize()))
}

/// Serialises a compiled filter as a cache entry for `key`.
pub fn encode(key: &str, f: &CompiledFilter) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + f.program.len() * 8);
    out.extend_from_slice(MAGIC);
    let mut k = [0u8; 32];
    let _ = hex::decode_to_slice(key, &mut k);
    out.extend_from_slice(&k);
    out.extend_from_slice(&f.flags.to_le_bytes());
    out.extend_from_slice(&(f.program.len() as u32).to_le_bytes());
    for i in &f.program {
        out.extend_from_slice(&i.code.to_le_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_le_bytes());
    }
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

struct Reader<'a> {
    b: &'a [u8],
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|s| s.try_into().ok())
            .map(u32::from_le_bytes)
    }
}

/// Parses a cache entry; `None` when it is not a valid entry for `key`.
pub fn decode(key: &str, bytes: &[u8]) -> Option<CompiledFilter> {
    if bytes.len() < MAGIC.len() + 32 + 8 + 32 {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let mut r = Reader { b: body };
    if r.take(8)? != MAGIC || hex::encode(r.take(32)?) != key {
        return None;
    }
    let flags = r.u32()?;
    let len = r.u32()? as usize;
    if len == 0 || len > super::compile::MAX_INSNS {
        return None;
    }
    let raw = r.take(len * 8)?;
    let program = raw
        .chunks_exact(8)
        .map(|c| sock_filter {
            code: u16::from_le_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    if !r.b.is_empty() {
        return None;
    }
    Some(CompiledFilter { flags, program })
}

/// Where the entry for `key` lives under `dir`.
pub fn entry_path(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.bpf"))
}

/// Translates and compiles `profile` for the host's ABIs it names, using `cache_dir`
/// (created if missing) to skip the work when this exact profile was compiled before.
/// A cache that cannot be written is not an error: the filter is still returned.
pub fn compile_cached(
    profile: &LinuxSeccomp,
    cache_dir: &Path,
) -> Result<CompiledFilter, SeccompError> {
    let key = cache_key(profile, &abis(profile))?;
    let path = entry_path(cache_dir, &key);
    if let Ok(bytes) = std::fs::read(&path) {
        if let Some(f) = decode(&key, &bytes) {
            return Ok(f);
        }
    }
    let f = compile(&plan_all(profile)?)?;
    if let Err(e) = store(cache_dir, &path, &encode(&key, &f)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write seccomp cache entry");
    }
    Ok(f)
}

fn store(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile_in(dir)?;
    let res = tmp.1.write_all(bytes).and_then(|_| tmp.1.sync_data());
    let res = res.and_then(|_| std::fs::rename(&tmp.0, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp.0);
    }
    res
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let mut n = 0u32;
    loop {
        let p = dir.join(format!(".tmp-{}-{}", std::process::id(), n));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docker() -> LinuxSeccomp {
        serde_json::from_str(include_str!("testdata/docker-default.json")).unwrap()
    }

    #[test]
    fn cache_hit_returns_identical_program() {
        let dir = tempfile::tempdir().unwrap();
        let p = docker();
        let first = compile_cached(&p, dir.path()).unwrap();
        let key = cache_key(&p, &abis(&p)).unwrap();
        let path = entry_path(dir.path(), &key);
        let on_disk = std::fs::read(&path).unwrap();
        let second = compile_cached(&p, dir.path()).unwrap();
        assert_eq!(first, second);
        assert_eq!(encode(&key, &second), on_disk);
        // Only the entry is left: no temp files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn hit_is_served_from_disk() {
        // Plant a (valid) entry that differs from what compiling would give: a hit
        // must return exactly it, proving the cache is read rather than bypassed.
        let dir = tempfile::tempdir().unwrap();
        let p = docker();
        let key = cache_key(&p, &abis(&p)).unwrap();
        let planted = CompiledFilter {
            flags: 2,
            program: vec![sock_filter {
                code: 6,
                jt: 0,
                jf: 0,
                k: 0x7fff_0000,
            }],
        };
        std::fs::write(entry_path(dir.path(), &key), encode(&key, &planted)).unwrap();
        assert_eq!(compile_cached(&p, dir.path()).unwrap(), planted);
    }

    #[test]
    fn corrupt_entry_is_recompiled_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = docker();
        let good = compile_cached(&p, dir.path()).unwrap();
        let key = cache_key(&p, &abis(&p)).unwrap();
        let path = entry_path(dir.path(), &key);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[60] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(decode(&key, &bytes).is_none());
        assert_eq!(compile_cached(&p, dir.path()).unwrap(), good);
        assert_eq!(decode(&key, &std::fs::read(&path).unwrap()), Some(good));
        std::fs::write(&path, b"short").unwrap();
        assert!(compile_cached(&p, dir.path()).is_ok());
    }

    #[test]
    fn key_depends_on_profile() {
        let a = docker();
        let mut b = docker();
        b.set_default_errno_ret(Some(38));
        let abis = abis(&a);
        let ka = cache_key(&a, &abis).unwrap();
        assert_ne!(ka, cache_key(&b, &abis).unwrap());
        assert_eq!(ka, cache_key(&docker(), &abis).unwrap());
        assert_ne!(ka, cache_key(&a, &[SyscallArch::X86_64]).unwrap());
        // An entry for another key is refused.
        let f = compile(&plan_all(&a).unwrap()).unwrap();
        let other = cache_key(&b, &abis).unwrap();
        assert!(decode(&other, &encode(&ka, &f)).is_none());
    }

    #[test]
    fn errors_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let p: LinuxSeccomp =
            serde_json::from_str(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).unwrap();
        assert!(compile_cached(&p, dir.path()).is_err());
        assert!(compile_cached(&p, dir.path()).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn docker_profile_translates() {
        use crate::seccomp::eval::{lets_through, verdict, SeccompData};
        let p = docker();
        let names: usize = p.syscalls().iter().flatten().map(|s| s.names().len()).sum();
        assert!(names >= 300, "fixture has {names} names");
        let plans = plan_all(&p).unwrap();
        assert_eq!(plans.len(), 3, "x86_64, x86 and x32 are listed");
        // i386-only names are skipped on x86_64, not errors.
        assert!(plans[0].skipped.iter().any(|s| s == "chown32"));
        let f = compile(&plans).unwrap();
        let x = SyscallArch::X86_64;
        let v = |nr: u32, args: [u64; 6]| {
            verdict(
                &f,
                &SeccompData {
                    nr,
                    arch: x.audit_arch(),
                    instruction_pointer: 0,
                    args,
                },
            )
            .unwrap()
        };
        assert_eq!(v(0, [0; 6]), 0x7fff_0000); // read
        assert_eq!(v(83, [0; 6]), 0x7fff_0000); // mkdir
        assert_eq!(v(165, [0; 6]), 0x0005_0001); // mount: EPERM
        assert_eq!(v(435, [0; 6]), 0x0005_0026); // clone3: ENOSYS
        assert_eq!(v(135, [0; 6]), 0x7fff_0000); // personality(0)
        assert_eq!(v(135, [1, 0, 0, 0, 0, 0]), 0x0005_0001);
        for abi in [SyscallArch::X86, SyscallArch::X32] {
            assert!(lets_through(&f, abi, "read", [0; 6]), "{abi:?}");
            assert!(!lets_through(&f, abi, "mount", [0; 6]), "{abi:?}");
        }
        assert!(lets_through(&f, SyscallArch::X86, "chown32", [0; 6]));
    }
}
