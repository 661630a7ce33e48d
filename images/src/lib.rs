//! OCI images for Berth: import, safe layer unpack, a layer store and
//! overlay snapshots, and bundles generated from image configs.
//!
//! The pieces, from the outside in:
//! - [`reference`] parses `name:tag` / `name@sha256:...`.
//! - [`digest`] verifies every blob's digest and size while it streams.
//! - [`manifest`] holds OCI and Docker v2 manifests, indexes and configs and
//!   picks the host platform out of a multi-platform index.
//! - [`source`] reads images from an OCI layout directory, an oci-archive or
//!   a docker-archive, all through one [`source::BlobSource`] interface.
//! - [`unpack`] applies a layer tar (plain, gzip, zstd) inside a root with
//!   every path resolved by `openat2(RESOLVE_IN_ROOT)`.
//! - [`store`] keeps blobs by digest, unpacked layers by diff_id and images by
//!   reference; [`import`] feeds it from a source (a registry puller would
//!   feed it the same way: `ingest_blob` then `commit_image`).
//! - [`snapshot`] prepares a container rootfs as an overlay mount (the caller
//!   performs it) or, where overlayfs is missing, a full copy.
//! - [`bundle`] turns an image config into a runtime config.json.

pub mod bundle;
pub mod digest;
pub mod escape;
pub mod flatten;
pub mod import;
pub mod manifest;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod source;
pub mod store;
mod sys;
#[cfg(test)]
pub(crate) mod testutil;
pub mod unpack;
