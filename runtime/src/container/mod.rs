//! Containers: on-disk state, status derived from the real process, and the lifecycle
//! operations behind the CLI (create, start, kill, delete, run).

pub mod create;
pub mod exec;
pub mod guard;
pub mod ops;
pub mod state;

pub use state::{ContainerDir, State, Status};

/// Lifecycle errors; each names the container.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("container {0} already exists")]
    Exists(String),
    #[error("container {0} does not exist")]
    NotExist(String),
    #[error("invalid container id {0:?}: {1}")]
    InvalidId(String, &'static str),
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("container {id} state is corrupt ({path}): {message}")]
    Corrupt {
        id: String,
        path: std::path::PathBuf,
        message: String,
    },
    #[error("cannot {action} container {id}: it is {status}")]
    BadStatus {
        action: &'static str,
        id: String,
        status: Status,
    },
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error("{0}")]
    Other(String),
}

/// Container ids: no `/`, no `..`, not empty; the characters runc allows.
pub fn validate_id(id: &str) -> Result<(), ContainerError> {
    if id.is_empty() {
        return Err(ContainerError::InvalidId(id.into(), "it is empty"));
    }
    if id == "." || id == ".." || id.contains("..") {
        return Err(ContainerError::InvalidId(
            id.into(),
            "it must not contain `..`",
        ));
    }
    if id.contains('/') {
        return Err(ContainerError::InvalidId(
            id.into(),
            "it must not contain `/`",
        ));
    }
    if id.len() > 1024 {
        return Err(ContainerError::InvalidId(
            id.into(),
            "it is longer than 1024 bytes",
        ));
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'))
    {
        return Err(ContainerError::InvalidId(
            id.into(),
            "only letters, digits and _ + - . are allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids() {
        for bad in ["", "a/b", "..", "a..b", "x y", "."] {
            assert!(super::validate_id(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "abc-1_2.x", "0123456789abcdef"] {
            assert!(super::validate_id(good).is_ok(), "{good:?}");
        }
    }
}
