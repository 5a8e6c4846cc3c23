//! A deadline for a collective that can wait forever inside a library: an NCCL all-reduce,
//! or the stream synchronisation after it, never returns if a peer stalls inside NCCL (the
//! group's own time-out only covers the meeting before it). As PyTorch's NCCL watchdog does,
//! a watcher thread gives the call `train.sync_timeout_s`; past it, it names this rank and
//! the call on stderr and aborts the communicator (`ncclCommAbort`, which makes the blocked
//! call return with an error), and if the call is still stuck a grace period later, it ends
//! the process (exit 1) rather than hang.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// What the watcher does when a call is still stuck after its abort.
pub type Stuck = fn(String);

/// Print and exit 1: the only way out of a call that nothing can interrupt.
pub fn exit_stuck(msg: String) {
    eprintln!("{msg}");
    std::process::exit(1)
}

#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    pub rank: usize,
    pub timeout: Duration,
    /// How long the aborted call gets to return before [`Deadline::stuck`] runs.
    pub grace: Duration,
    pub stuck: Stuck,
}

impl Deadline {
    /// A deadline of `timeout` for this rank's calls, with a grace of a tenth of it (10 s at
    /// least, a minute at most) after an abort.
    pub fn new(rank: usize, timeout: Duration) -> Self {
        Self {
            rank,
            timeout,
            grace: (timeout / 10).clamp(Duration::from_secs(10), Duration::from_secs(60)),
            stuck: exit_stuck,
        }
    }

    /// Run `op` (`what`, for the messages); if it has not returned within the time-out,
    /// `abort` runs on the watcher thread, and the call's result, whatever it is, becomes an
    /// error naming the rank and the call.
    pub fn run<T>(
        &self,
        what: &str,
        abort: impl FnOnce() + Send + 'static,
        op: impl FnOnce() -> T,
    ) -> Result<T> {
        let (done, finished) = channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let msg = format!(
            "rank {}: {what} did not finish within {:.0} s (train.sync_timeout_s); a peer stalled inside NCCL",
            self.rank,
            self.timeout.as_secs_f64()
        );
        let watcher = {
            let (fired, msg, this) = (fired.clone(), msg.clone(), *self);
            std::thread::spawn(move || {
                if finished.recv_timeout(this.timeout) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
                fired.store(true, Ordering::SeqCst);
                eprintln!("{msg}: aborting the communicator");
                abort();
                if finished.recv_timeout(this.grace) == Err(RecvTimeoutError::Timeout) {
                    (this.stuck)(format!(
                        "{msg}; still blocked {:.0} s after the abort: exiting",
                        this.grace.as_secs_f64()
                    ));
                }
            })
        };
        let out = op();
        let _ = done.send(());
        let _ = watcher.join();
        match fired.load(Ordering::SeqCst) {
            false => Ok(out),
            true => Err(Error::Training(format!(
                "{msg}; the communicator was aborted"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    fn deadline(stuck: Stuck) -> Deadline {
        Deadline {
            rank: 3,
            timeout: Duration::from_millis(50),
            grace: Duration::from_millis(50),
            stuck,
        }
    }

    #[test]
    fn a_call_that_returns_in_time_is_untouched() {
        let aborted = Arc::new(AtomicBool::new(false));
        let a = aborted.clone();
        let d = Deadline {
            timeout: Duration::from_secs(3600),
            ..deadline(exit_stuck)
        };
        let r = d.run("the sum", move || a.store(true, Ordering::SeqCst), || 42);
        assert_eq!(r.unwrap(), 42);
        assert!(!aborted.load(Ordering::SeqCst));
    }

    /// A stand-in collective that blocks until the communicator is aborted (as NCCL's does):
    /// the abort runs, the call returns, and the result is an error naming rank and call.
    #[test]
    fn a_stalled_call_is_aborted_and_named() {
        let (release, blocked) = channel::<()>();
        let release = Mutex::new(Some(release));
        let abort = move || {
            release.lock().unwrap().take();
        };
        static STUCK: AtomicUsize = AtomicUsize::new(0);
        let d = deadline(|_| {
            STUCK.fetch_add(1, Ordering::SeqCst);
        });
        let r = d.run("the all-reduce of step 7's gradients", abort, move || {
            // Returns when the sender is dropped by the abort.
            let _ = blocked.recv();
            "partial sums"
        });
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("rank 3: the all-reduce of step 7's gradients did not finish")
                && e.contains("aborted"),
            "{e}"
        );
        assert_eq!(
            STUCK.load(Ordering::SeqCst),
            0,
            "the abort freed the call in time"
        );
    }

    /// A call the abort cannot free: the stuck handler (in a run, exit 1) is called.
    #[test]
    fn a_call_the_abort_cannot_free_ends_the_process() {
        static STUCK: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let d = deadline(|msg| STUCK.lock().unwrap().push(msg));
        let r = d.run(
            "the stream sync",
            || {},
            || {
                // Blocks until the stuck handler has run (the test's stand-in for the exit).
                while STUCK.lock().unwrap().is_empty() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            },
        );
        assert!(r.is_err());
        let said = STUCK.lock().unwrap().clone();
        assert_eq!(said.len(), 1);
        assert!(
            said[0].contains("still blocked") && said[0].contains("rank 3"),
            "{}",
            said[0]
        );
    }
}
