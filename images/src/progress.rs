//! Progress reporting: a small trait the import calls, with a quiet
//! implementation and an `indicatif` one for terminals.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;

/// Receives progress of long operations. Ids name layers (short digests).
pub trait Progress: Sync {
    fn start(&self, id: &str, what: &str, total: u64);
    fn advance(&self, id: &str, bytes: u64);
    fn finish(&self, id: &str, what: &str);
}

/// Reports nothing (non-terminal stderr, tests).
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: &str, _: u64) {}
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, _: &str, _: &str) {}
}

/// One plain line per start and finish on stderr (not a terminal).
pub struct Lines;

impl Progress for Lines {
    fn start(&self, id: &str, what: &str, total: u64) {
        eprintln!("{id}: {what} ({total} bytes)");
    }
    fn advance(&self, _: &str, _: u64) {}
    fn finish(&self, id: &str, what: &str) {
        eprintln!("{id}: {what}");
    }
}

/// Progress bars on stderr, one per layer.
pub struct Bars {
    multi: indicatif::MultiProgress,
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
}

impl Bars {
    pub fn new() -> Bars {
        Bars {
            multi: indicatif::MultiProgress::with_draw_target(
                indicatif::ProgressDrawTarget::stderr(),
            ),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

impl Default for Bars {
    fn default() -> Self {
        Bars::new()
    }
}

impl Progress for Bars {
    fn start(&self, id: &str, what: &str, total: u64) {
        let bar = self.multi.add(indicatif::ProgressBar::new(total));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{prefix:>12} {msg:10} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(id.to_string());
        bar.set_message(what.to_string());
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(id.to_string(), bar);
        }
    }

    fn advance(&self, id: &str, bytes: u64) {
        if let Ok(bars) = self.bars.lock() {
            if let Some(b) = bars.get(id) {
                b.inc(bytes);
            }
        }
    }

    fn finish(&self, id: &str, what: &str) {
        if let Ok(bars) = self.bars.lock() {
            if let Some(b) = bars.get(id) {
                b.finish_with_message(what.to_string());
            }
        }
    }
}

/// Reports bytes read through it.
pub struct Counting<'a, R> {
    pub inner: R,
    pub id: String,
    pub progress: &'a dyn Progress,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(&self.id, n as u64);
        Ok(n)
    }
}
