//! Fuzzes the layer unpacker: any byte string, as a (possibly compressed)
//! layer, in both whiteout modes. It must return Ok or an error, never
//! panic, and never create anything outside the target root (checked with a
//! sentinel directory beside the root that must stay empty).
//!
//! cargo +nightly fuzz run unpack_layer   (from /work/main/fuzz, as root)

#![no_main]

use berth_images::unpack::{unpack_layer, UnpackOptions, WhiteoutMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&root).expect("mkdir root");
    std::fs::create_dir(&outside).expect("mkdir outside");
    let mode = if data.first().is_some_and(|b| b & 1 == 1) {
        WhiteoutMode::Overlay
    } else {
        WhiteoutMode::Flatten
    };
    let mut opts = UnpackOptions::new(mode);
    opts.max_size = 64 << 20;
    let _ = unpack_layer(data, &root, &opts, None);
    let escaped = std::fs::read_dir(&outside).expect("read outside").count();
    assert_eq!(escaped, 0, "an entry escaped the root");
    let siblings = std::fs::read_dir(tmp.path()).expect("read tmp").count();
    assert_eq!(siblings, 2, "an entry created something beside the root");
});
