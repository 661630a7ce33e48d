//! A small pool of worker threads for the agent's slow steps (building a bundle: snapshot
//! mount and config.json; removing one; later image pulls), so the event loop never waits on
//! them. A finished job wakes the loop through the daemon's shared `mio::Waker`.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// What a job was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Prepare,
    Cleanup,
    /// A network namespace and CNI ADD (see `agent::net`).
    Attach,
    /// CNI DEL and the namespace removed.
    Detach,
    /// Leftovers of a previous berthd removed (not a unit's job).
    Sweep,
}

/// A finished job.
#[derive(Debug)]
pub struct Done {
    pub unit: String,
    /// Which instance generation asked (a removed and relaunched unit is a new generation).
    pub generation: u64,
    pub kind: JobKind,
    pub result: Result<(), String>,
    /// The container's address (from an attach).
    pub ip: Option<std::net::IpAddr>,
}

type Job = Box<dyn FnOnce() -> Done + Send>;

pub struct Pool {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    /// `threads` workers; `wake` is called after each job.
    pub fn new(threads: usize, wake: Arc<dyn Fn() + Send + Sync>) -> std::io::Result<Pool> {
        let (jobs_tx, jobs_rx) = channel::<Job>();
        let (done_tx, done_rx) = channel::<Done>();
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let mut handles = Vec::new();
        for n in 0..threads.max(1) {
            let rx = Arc::clone(&jobs_rx);
            let tx = done_tx.clone();
            let wake = Arc::clone(&wake);
            let h = std::thread::Builder::new()
                .name(format!("agent-worker-{n}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    if tx.send(job()).is_err() {
                        return;
                    }
                    wake();
                })?;
            handles.push(h);
        }
        Ok(Pool {
            jobs: Some(jobs_tx),
            done: done_rx,
            threads: handles,
        })
    }

    pub fn submit(&self, job: impl FnOnce() -> Done + Send + 'static) {
        if let Some(tx) = &self.jobs {
            let _ = tx.send(Box::new(job));
        }
    }

    /// The jobs finished since the last call.
    pub fn finished(&self) -> Vec<Done> {
        self.done.try_iter().collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the queue ends the workers once their current job is done.
        self.jobs = None;
        for h in self.threads.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn jobs_run_off_thread_and_wake_the_caller() {
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        let pool = Pool::new(
            2,
            Arc::new(move || {
                w.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .expect("pool");
        for n in 0..4u64 {
            pool.submit(move || Done {
                unit: format!("u{n}"),
                generation: n,
                kind: JobKind::Prepare,
                result: Ok(()),
                ip: None,
            });
        }
        let mut got = Vec::new();
        for _ in 0..200 {
            got.extend(pool.finished());
            if got.len() == 4 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got.len(), 4);
        assert_eq!(woken.load(Ordering::SeqCst), 4);
    }
}
