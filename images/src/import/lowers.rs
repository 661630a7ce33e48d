//! The layers below a layer that a commit unpacks, for following the
//! symlinks they hold (see `unpack::resolve`). Layers are unpacked in
//! parallel; a layer whose entries need a parent it does not have itself
//! waits, on its first such entry only, until the fresh layers below it are
//! unpacked. Jobs are taken bottom layer first, so what it waits for is
//! already running on another worker (or finished): no cycle is possible.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};

use crate::digest::Digest;
use crate::store::Store;
use crate::unpack::{LowerDirs, LowerView};

enum Slot {
    Running,
    Done(PathBuf),
    Failed,
}

/// Where each layer this commit unpacks stands.
pub struct Board {
    slots: Mutex<HashMap<Digest, Slot>>,
    changed: Condvar,
}

impl Board {
    pub fn new(fresh: impl IntoIterator<Item = Digest>) -> Board {
        Board {
            slots: Mutex::new(fresh.into_iter().map(|d| (d, Slot::Running)).collect()),
            changed: Condvar::new(),
        }
    }

    fn set(&self, d: &Digest, slot: Slot) {
        if let Ok(mut s) = self.slots.lock() {
            s.insert(d.clone(), slot);
        }
        self.changed.notify_all();
    }

    /// The layer `d` is unpacked at `root` (its temp directory).
    pub fn done(&self, d: &Digest, root: &Path) {
        self.set(d, Slot::Done(root.to_path_buf()));
    }

    pub fn failed(&self, d: &Digest) {
        self.set(d, Slot::Failed);
    }

    /// The directory of layer `d`: its temp root once unpacked by this
    /// commit, or the store's.
    fn dir(&self, store: &Store, d: &Digest) -> Result<PathBuf, String> {
        let mut slots = self
            .slots
            .lock()
            .map_err(|_| "a layer worker panicked".to_string())?;
        loop {
            match slots.get(d) {
                None => return Ok(store.layer_dir(d)),
                Some(Slot::Done(p)) => return Ok(p.clone()),
                Some(Slot::Failed) => return Err(format!("lower layer {d} failed")),
                Some(Slot::Running) => {
                    slots = self
                        .changed
                        .wait(slots)
                        .map_err(|_| "a layer worker panicked".to_string())?;
                }
            }
        }
    }
}

/// The stacked layers below one layer, opened on first use.
pub struct Lowers<'a> {
    /// diff_ids, top first, each once.
    below: Vec<Digest>,
    store: &'a Store,
    board: &'a Board,
    view: OnceLock<Result<LowerDirs, String>>,
}

impl<'a> Lowers<'a> {
    pub fn new(below: Vec<Digest>, store: &'a Store, board: &'a Board) -> Lowers<'a> {
        Lowers {
            below,
            store,
            board,
            view: OnceLock::new(),
        }
    }

    fn open(&self) -> Result<LowerDirs, String> {
        let mut dirs = Vec::new();
        for d in &self.below {
            let p = self.board.dir(self.store, d)?;
            let opaque = crate::flatten::root_is_opaque(&p);
            dirs.push(p);
            if opaque {
                break;
            }
        }
        LowerDirs::open(&dirs)
    }
}

impl LowerView for Lowers<'_> {
    fn lookup(&self, path: &[Vec<u8>]) -> Result<crate::unpack::resolve::LowerKind, String> {
        match self.view.get_or_init(|| self.open()) {
            Ok(v) => v.lookup(path),
            Err(e) => Err(e.clone()),
        }
    }
}
