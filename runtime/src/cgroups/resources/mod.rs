//! linux.resources -> cgroupfs writes for v1 and v2 (issue 3; being built).
