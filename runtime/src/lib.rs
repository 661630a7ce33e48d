//! Berth: a runc-compatible OCI runtime.
