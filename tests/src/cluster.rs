//! Test helpers for the cluster tests (see tests/tests/).
