//! The journal side of the agent: each instance's fifo, read in the loop into its journal.

use std::fs::OpenOptions;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::time::SystemTime;

use super::journal::PIPE_BYTES;
use super::launch::FIFO;
use super::runner::{Agent, Out};
use super::sys;

/// At most this much is read from one fifo per readiness event (fairness between units).
const READ_BUDGET: usize = 1 << 20;

impl Agent {
    /// Makes sure the slot's fifo exists and its read end is watched.
    pub(super) fn open_fifo(&mut self, unit: &str) -> Result<(), String> {
        let Some(slot) = self.slots.get(unit) else {
            return Err("no such unit".into());
        };
        if slot.fifo.is_some() {
            return Ok(());
        }
        let path = slot.dir.join(FIFO);
        sys::ensure_fifo(&path)
            .map_err(|e| format!("cannot create the journal fifo {}: {e}", path.display()))?;
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| format!("cannot open the journal fifo {}: {e}", path.display()))?;
        sys::grow_pipe(&reader, PIPE_BYTES);
        self.add_fifo(unit, reader);
        Ok(())
    }

    /// Reads what the unit's container wrote and appends it to its journal.
    pub(super) fn drain_fifo(&mut self, unit: &str) {
        let Some(slot) = self.slots.get_mut(unit) else {
            return;
        };
        let Some((_, fifo)) = slot.fifo.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; 64 << 10];
        let mut lines = Vec::new();
        let mut total = 0;
        while total < READ_BUDGET {
            match fifo.read(&mut buf) {
                Ok(0) => break, // no writer right now
                Ok(n) => {
                    total += n;
                    match slot.journal.append(&buf[..n], SystemTime::now()) {
                        Ok(l) => lines.extend(l),
                        Err(e) => {
                            tracing::warn!(%unit, "journal write: {e}");
                            break;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(%unit, "journal fifo read: {e}");
                    break;
                }
            }
        }
        if !lines.is_empty() {
            self.emit(Out::Journal {
                unit: unit.to_string(),
                lines,
            });
        }
        if total >= READ_BUDGET {
            // More may wait; edge-triggered readiness will not say so again.
            self.pending_fifos.insert(unit.to_string());
        }
    }
}
