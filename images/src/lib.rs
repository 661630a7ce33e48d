//! OCI images for Berth (being built: see issue 4).
