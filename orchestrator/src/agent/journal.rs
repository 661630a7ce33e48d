//! Per-unit journals: bounded files fed from a fifo, with no process per container.
//!
//! A unit's container writes its stdout and stderr into a fifo it holds open read-write
//! (given to `berth create` as the container's stdio). Because the container itself counts
//! as a reader, a write never fails with EPIPE while berthd is away: the pipe's buffer
//! (raised to 1 MiB) holds the output, and a container that writes more than that while
//! berthd is down blocks until berthd is back (at most the fence's run lease: after that the
//! watchdog stops it). berthd reads the fifo in its loop and appends timestamped lines to
//! `<unit>.log`; when that file passes its bound it becomes `<unit>.log.1` (replacing the
//! previous one), so a unit's journal never takes more than twice the bound.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Default bound of one journal file.
pub const DEFAULT_MAX_BYTES: u64 = 1 << 20;
/// A line longer than this is cut (a program writing without newlines cannot grow memory).
pub const MAX_LINE: usize = 16 << 10;
/// The pipe buffer asked for the fifo.
pub const PIPE_BYTES: i32 = 1 << 20;

/// One unit's journal file pair.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    max_bytes: u64,
    file: Option<File>,
    size: u64,
    partial: Vec<u8>,
}

/// The journal file of `unit` in `dir`.
pub fn path_of(dir: &Path, unit: &str) -> PathBuf {
    dir.join(format!("{unit}.log"))
}

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

fn stamp(now: SystemTime) -> String {
    humantime::format_rfc3339_millis(now).to_string()
}

impl Journal {
    pub fn new(dir: &Path, unit: &str, max_bytes: u64) -> Journal {
        Journal {
            path: path_of(dir, unit),
            max_bytes: max_bytes.max(4096),
            file: None,
            size: 0,
            partial: Vec::new(),
        }
    }

    fn file(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode_0600()
                .open(&self.path)?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("journal file not open"))
    }

    /// Appends output bytes; returns the complete lines written (for followers).
    pub fn append(&mut self, data: &[u8], now: SystemTime) -> io::Result<Vec<String>> {
        self.partial.extend_from_slice(data);
        let mut lines = Vec::new();
        loop {
            let cut = match self.partial.iter().position(|b| *b == b'\n') {
                Some(i) if i <= MAX_LINE => Some((i, i + 1)),
                _ if self.partial.len() > MAX_LINE => Some((MAX_LINE, MAX_LINE)),
                _ => None,
            };
            let Some((end, next)) = cut else { break };
            let text = String::from_utf8_lossy(&self.partial[..end]).into_owned();
            self.partial.drain(..next);
            lines.push(self.write_line(&text, now)?);
        }
        Ok(lines)
    }

    /// Writes what is left of an unterminated line (the container exited).
    pub fn flush_partial(&mut self, now: SystemTime) -> io::Result<Option<String>> {
        if self.partial.is_empty() {
            return Ok(None);
        }
        let text = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        self.write_line(&text, now).map(Some)
    }

    /// A line from the agent itself (start, exit), marked as such.
    pub fn note(&mut self, text: &str, now: SystemTime) -> io::Result<String> {
        self.write_line(&format!("-- {text} --"), now)
    }

    fn write_line(&mut self, text: &str, now: SystemTime) -> io::Result<String> {
        let line = format!("{} {}\n", stamp(now), text.trim_end_matches('\r'));
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let f = self.file()?;
        f.write_all(line.as_bytes())?;
        self.size += line.len() as u64;
        Ok(line.trim_end_matches('\n').to_string())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        std::fs::rename(&self.path, rotated(&self.path))?;
        self.size = 0;
        Ok(())
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// The last `n` lines of `unit`'s journal (both files), oldest first.
pub fn tail(dir: &Path, unit: &str, n: usize) -> io::Result<Vec<String>> {
    let path = path_of(dir, unit);
    let mut last: VecDeque<String> = VecDeque::with_capacity(n.min(10_000));
    for p in [rotated(&path), path] {
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // Bounded: files are at most the journal bound; lines are cut at MAX_LINE on write.
        for line in BufReader::new(f.take(64 << 20)).lines() {
            let line = line.unwrap_or_default();
            if n == 0 {
                continue;
            }
            if last.len() == n {
                last.pop_front();
            }
            last.push_back(line);
        }
    }
    Ok(last.into_iter().collect())
}

/// Removes a unit's journal files (when the unit is destroyed).
pub fn remove(dir: &Path, unit: &str) {
    let path = path_of(dir, unit);
    let _ = std::fs::remove_file(rotated(&path));
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn lines_are_stamped_and_partial_lines_wait_for_their_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::new(dir.path(), "web.service", DEFAULT_MAX_BYTES);
        assert_eq!(
            j.append(b"hello\nwor", t(0)).expect("append"),
            vec!["2023-11-14T22:13:20.000Z hello"]
        );
        assert!(j.append(b"ld", t(1)).expect("append").is_empty());
        assert_eq!(j.append(b"\n", t(2)).expect("append").len(), 1);
        j.append(b"no newline", t(3)).expect("append");
        assert!(j.flush_partial(t(3)).expect("flush").is_some());
        j.note("exited with status 0", t(4)).expect("note");
        let lines = tail(dir.path(), "web.service", 10).expect("tail");
        assert_eq!(lines.len(), 4);
        assert!(lines[1].ends_with(" world"));
        assert!(lines[2].ends_with(" no newline"));
        assert!(lines[3].ends_with(" -- exited with status 0 --"));
        assert_eq!(tail(dir.path(), "web.service", 2).expect("tail").len(), 2);
        assert!(tail(dir.path(), "other.service", 5)
            .expect("tail")
            .is_empty());
    }

    #[test]
    fn the_journal_stays_within_twice_its_bound_and_keeps_the_newest_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::new(dir.path(), "chatty.service", 4096);
        for i in 0..2_000 {
            j.append(format!("line {i}\n").as_bytes(), t(0))
                .expect("append");
        }
        let a = std::fs::metadata(path_of(dir.path(), "chatty.service")).map(|m| m.len());
        let b = std::fs::metadata(rotated(&path_of(dir.path(), "chatty.service"))).map(|m| m.len());
        assert!(a.expect("log") <= 4096 && b.expect("log.1") <= 4096);
        let lines = tail(dir.path(), "chatty.service", 3).expect("tail");
        assert!(lines[2].ends_with(" line 1999"), "{lines:?}");
        assert!(lines[0].ends_with(" line 1997"), "{lines:?}");
    }

    #[test]
    fn an_endless_line_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut j = Journal::new(dir.path(), "x.service", DEFAULT_MAX_BYTES);
        let lines = j
            .append(&vec![b'a'; MAX_LINE * 2 + 10], t(0))
            .expect("append");
        assert_eq!(lines.len(), 2);
        assert_eq!(j.partial.len(), 10);
    }
}
