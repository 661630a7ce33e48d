//! Test helpers for the images tests (see tests/tests/).
