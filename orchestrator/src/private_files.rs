//! Private files: berthd's data directory is created 0700 and its database and keys 0600
//! *before* anything is written to them (no window in which another user can open them),
//! and key files handed to berthd are refused when another user could read them or when
//! they belong to someone else.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PrivateFileError {
    #[error("cannot {what} {path}: {err}")]
    Io {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{path} is readable or writable by other users (mode {mode:04o}); chmod 600 it")]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path} belongs to uid {owner}, not to uid {me} that runs berthd; chown it")]
    ForeignOwner { path: PathBuf, owner: u32, me: u32 },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> PrivateFileError + 'a {
    move |err| PrivateFileError::Io {
        what,
        path: path.to_path_buf(),
        err,
    }
}

/// Creates `dir` (and missing parents) with mode 0700; an existing `dir` is narrowed to
/// 0700 if it is wider (it is ours: berthd's state directory).
pub fn create_dir(dir: &Path) -> Result<(), PrivateFileError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create directory", dir))?;
    let meta = std::fs::metadata(dir).map_err(io("stat", dir))?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("chmod 0700", dir))?;
    }
    Ok(())
}

/// Makes sure `path` exists as a regular file with mode 0600 before a library opens it
/// (redb creates files 0644 minus umask): an empty file is created 0600, an existing one
/// that is wider is narrowed.
pub fn prepare_file(path: &Path) -> Result<(), PrivateFileError> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("create", path)(e)),
    }
    let meta = std::fs::symlink_metadata(path).map_err(io("stat", path))?;
    if !meta.is_file() {
        return Err(PrivateFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io("chmod 0600", path))?;
    }
    Ok(())
}

/// What [`check_key_file`] decides from a key file's owner and mode (pure).
pub fn key_file_verdict(
    path: &Path,
    mode: u32,
    owner: u32,
    me: u32,
) -> Result<(), PrivateFileError> {
    if owner != me {
        return Err(PrivateFileError::ForeignOwner {
            path: path.to_path_buf(),
            owner,
            me,
        });
    }
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Exposed {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Reads a secret (private key, gossip key ring) after checking that it is a regular file
/// owned by the user running berthd and not accessible to anyone else.
pub fn read_key_file(path: &Path) -> Result<Vec<u8>, PrivateFileError> {
    let meta = std::fs::metadata(path).map_err(io("read key file", path))?;
    if !meta.is_file() {
        return Err(PrivateFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    key_file_verdict(
        path,
        meta.mode(),
        meta.uid(),
        nix::unistd::geteuid().as_raw(),
    )?;
    std::fs::read(path).map_err(io("read key file", path))
}

/// Writes a secret into a new file created 0600 (never over an existing one).
pub fn write_new_secret(path: &Path, data: &[u8]) -> Result<(), PrivateFileError> {
    use std::io::Write;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("create", path))?;
    f.write_all(data).map_err(io("write", path))?;
    f.sync_all().map_err(io("fsync", path))
}

/// Replaces a secret atomically (temp file 0600, fsync, rename), e.g. a key ring.
pub fn replace_secret(path: &Path, data: &[u8]) -> Result<(), PrivateFileError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    write_new_secret(&tmp, data)?;
    std::fs::rename(&tmp, path).map_err(|err| {
        let _ = std::fs::remove_file(&tmp);
        PrivateFileError::Io {
            what: "rename into place",
            path: path.to_path_buf(),
            err,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_files_and_dirs_are_private_from_the_start() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        create_dir(&dir).expect("create");
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // a wider existing directory is narrowed
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        create_dir(&dir).expect("again");
        let mode = std::fs::metadata(&dir).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let db = dir.join("raft.redb");
        prepare_file(&db).expect("prepare");
        let meta = std::fs::metadata(&db).expect("stat");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 0, "created empty");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        prepare_file(&db).expect("narrow");
        let mode = std::fs::metadata(&db).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn exposed_or_foreign_key_files_are_refused_naming_the_file() {
        let p = Path::new("/etc/berth/n1.key");
        assert!(key_file_verdict(p, 0o100600, 0, 0).is_ok());
        let e = key_file_verdict(p, 0o100644, 0, 0).expect_err("world-readable");
        assert!(e.to_string().contains("/etc/berth/n1.key"), "{e}");
        assert!(e.to_string().contains("0644"), "{e}");
        let e = key_file_verdict(p, 0o100640, 0, 0).expect_err("group-readable");
        assert!(matches!(e, PrivateFileError::Exposed { .. }));
        let e = key_file_verdict(p, 0o100600, 1000, 0).expect_err("foreign");
        assert!(e.to_string().contains("uid 1000"), "{e}");

        let tmp = tempfile::tempdir().expect("tempdir");
        let key = tmp.path().join("k");
        write_new_secret(&key, b"secret").expect("write");
        assert_eq!(read_key_file(&key).expect("read"), b"secret");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o604)).expect("chmod");
        let e = read_key_file(&key).expect_err("exposed");
        assert!(e.to_string().contains(&key.display().to_string()), "{e}");
    }
}
