//! Test helpers for the runtime tests (see tests/tests/).
