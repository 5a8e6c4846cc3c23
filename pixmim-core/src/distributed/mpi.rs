//! [`ProcessGroup`] over MPI, on host buffers: whatever MPI library `mpirun` or `srun`
//! started the processes with (built against Open MPI here).
//!
//! A hang must never be silent, and blocking MPI calls have no time-out; so before each
//! collective the ranks meet at rank 0 with small point-to-point messages that are polled
//! against a deadline: rank 0 names the ranks that did not arrive, and the others name rank 0
//! if it does not answer. The messages also carry each rank's call number and what it is
//! summing, so ranks that went different ways are caught too. The collective itself is
//! non-blocking and polled against the same deadline; a rank that stops inside it is found by
//! rank 0 pinging the others, which answer while they wait. A rank that dies outright is
//! reported by the launcher itself (`mpirun` stops the job and names it).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::datatype::Equivalence;
use mpi::environment::Universe;
use mpi::request::{Request, Scope};
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use super::{hash_str, stop, ProcessGroup};
use crate::error::{Error, Result};

const ARRIVE: i32 = 0x5041;
const GO: i32 = 0x474f;
const PING: i32 = 0x5049;
const PONG: i32 = 0x504f;

/// The default time-out until the run's config sets `train.sync_timeout_s`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

pub struct MpiGroup {
    rank: usize,
    world: usize,
    host: String,
    library: String,
    timeout_ms: AtomicU64,
    mpi: Mutex<Mpi>,
}

struct Mpi {
    // Finalises MPI when the group is dropped.
    _universe: Universe,
    world: SimpleCommunicator,
    /// Collective calls made so far: equal on every rank, or the ranks went different ways.
    calls: u64,
}

// SAFETY: MPI is initialised at MPI_THREAD_SERIALIZED and every call goes through the
// group's mutex, so at most one thread calls MPI at a time, which that level allows from any
// thread (the training loop runs on a pool thread, not the one that initialised MPI).
unsafe impl Send for Mpi {}

impl MpiGroup {
    /// Initialise MPI for this process (once; the launcher says who the other ranks are).
    pub fn init() -> Result<Self> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::Device("MPI is already initialised in this process".into()))?;
        if level < Threading::Serialized {
            return Err(Error::Device(format!(
                "the MPI library offers thread level {level:?}; pixmim needs Serialized"
            )));
        }
        let world = universe.world();
        let library = mpi::environment::library_version()
            .ok()
            .and_then(|v| v.split([',', '\n']).next().map(|l| l.trim().to_owned()))
            .unwrap_or_else(|| "MPI".into());
        Ok(Self {
            rank: world.rank() as usize,
            world: world.size() as usize,
            host: mpi::environment::processor_name().unwrap_or_default(),
            library,
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
            mpi: Mutex::new(Mpi {
                _universe: universe,
                world,
                calls: 0,
            }),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Mpi> {
        self.mpi.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fault of the group (the CLI names this rank when it reports it).
    fn fault(&self, msg: String) -> Error {
        Error::Training(msg)
    }

    /// Wait until every rank has reached this call (see the module's doc), or fail naming
    /// the ranks that did not within the time-out.
    fn meet(&self, mpi: &mut Mpi, what: &str) -> Result<()> {
        mpi.calls += 1;
        if self.world == 1 {
            return Ok(());
        }
        let token = [mpi.calls, hash_str(what)];
        let timeout = self.timeout();
        let secs = timeout.as_secs_f64();
        let mut backoff = Backoff::default();
        if self.rank == 0 {
            let deadline = Instant::now() + timeout;
            let mut missing: Vec<usize> = (1..self.world).collect();
            while !missing.is_empty() {
                let mut still = Vec::new();
                for r in missing {
                    let peer = mpi.world.process_at_rank(r as i32);
                    if peer.immediate_probe_with_tag(ARRIVE).is_none() {
                        still.push(r);
                        continue;
                    }
                    let (theirs, _) = peer.receive_vec_with_tag::<u64>(ARRIVE);
                    if theirs != token {
                        return Err(self.fault(format!(
                            "rank {r} reached call {} while this rank reached call {} ({what}): \
                             the processes went different ways",
                            theirs.first().copied().unwrap_or(0),
                            mpi.calls
                        )));
                    }
                }
                missing = still;
                if !missing.is_empty() && Instant::now() > deadline {
                    let names: Vec<String> = missing.iter().map(|r| r.to_string()).collect();
                    return Err(self.fault(format!(
                        "rank {} did not reach {what} within {secs} s (train.sync_timeout_s): \
                         it died or hangs; stopping the run",
                        names.join(", ")
                    )));
                }
                backoff.pause();
            }
            for r in 1..self.world {
                mpi.world
                    .process_at_rank(r as i32)
                    .send_with_tag(&token[..], GO);
            }
        } else {
            let lead = mpi.world.process_at_rank(0);
            lead.send_with_tag(&token[..], ARRIVE);
            // Longer than rank 0's wait, so that rank 0 names a missing rank first.
            let deadline = Instant::now() + timeout * 2;
            while lead.immediate_probe_with_tag(GO).is_none() {
                answer_pings(&mpi.world);
                if Instant::now() > deadline {
                    return Err(self.fault(format!(
                        "rank 0 did not answer at {what} within {} s (train.sync_timeout_s): \
                         it died or hangs; stopping the run",
                        2.0 * secs
                    )));
                }
                backoff.pause();
            }
            let (go, _) = lead.receive_vec_with_tag::<u64>(GO);
            if go != token {
                return Err(self.fault(format!(
                    "rank 0 went another way at {what}: the processes went different ways"
                )));
            }
        }
        Ok(())
    }

    fn sum<T: Equivalence + Copy>(&self, buf: &mut [T], what: &str) -> Result<()> {
        let mut mpi = self.lock();
        self.meet(&mut mpi, what)?;
        if self.world > 1 {
            // rsmpi has no MPI_IN_PLACE: the send side is a copy.
            let send = buf.to_vec();
            let world = &mpi.world;
            mpi::request::scope(|scope| {
                let op = SystemOperation::sum();
                let request = world.immediate_all_reduce_into(scope, &send[..], buf, op);
                self.complete(world, request, what);
            });
        }
        Ok(())
    }

    /// Poll `request` until it completes, answering rank 0's pings; past the deadline, stop
    /// the run naming the rank that stopped inside the collective.
    fn complete<'a, D: ?Sized, S: Scope<'a>>(
        &self,
        world: &SimpleCommunicator,
        mut request: Request<'a, D, S>,
        what: &str,
    ) {
        // Every rank is known to be here (`meet`): spin as a blocking call would.
        let deadline = Instant::now() + self.timeout() * if self.rank == 0 { 1 } else { 2 };
        loop {
            match request.test() {
                Ok(_) => return,
                Err(r) => request = r,
            }
            answer_pings(world);
            if Instant::now() > deadline {
                let e = self.fault(self.stalled(world, what));
                stop(self, &e)
            }
            std::thread::yield_now();
        }
    }

    /// Why a collective did not finish: on rank 0, the ranks that do not answer a ping.
    fn stalled(&self, world: &SimpleCommunicator, what: &str) -> String {
        let secs = self.timeout().as_secs_f64();
        if self.rank != 0 {
            return format!(
                "{what} did not finish within {} s (train.sync_timeout_s) and rank 0 did not \
                 stop the run first: rank 0 died or hangs",
                2.0 * secs
            );
        }
        for r in 1..self.world {
            world
                .process_at_rank(r as i32)
                .send_with_tag(&[0u64][..], PING);
        }
        let deadline = Instant::now() + self.timeout().min(Duration::from_secs(10));
        let mut silent: Vec<usize> = (1..self.world).collect();
        let mut backoff = Backoff::default();
        while !silent.is_empty() && Instant::now() < deadline {
            silent.retain(|&r| {
                let peer = world.process_at_rank(r as i32);
                match peer.immediate_probe_with_tag(PONG) {
                    Some(_) => {
                        peer.receive_vec_with_tag::<u64>(PONG);
                        false
                    }
                    None => true,
                }
            });
            backoff.pause();
        }
        let names: Vec<String> = silent.iter().map(|r| r.to_string()).collect();
        match names.is_empty() {
            true => format!(
                "{what} did not finish within {secs} s (train.sync_timeout_s) though every rank \
                 answers: the network or the MPI library is stuck; stopping the run"
            ),
            false => format!(
                "rank {} stopped inside {what}: no answer within {secs} s \
                 (train.sync_timeout_s); it died or hangs; stopping the run",
                names.join(", ")
            ),
        }
    }
}

impl ProcessGroup for MpiGroup {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn describe(&self) -> String {
        format!(
            "{}: rank {} of {} on {}",
            self.library, self.rank, self.world, self.host
        )
    }

    fn set_timeout(&self, timeout: Duration) {
        self.timeout_ms
            .store(timeout.as_millis() as u64, Ordering::Relaxed);
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    fn all_reduce_f32(&self, buf: &mut [f32], what: &str) -> Result<()> {
        self.sum(buf, what)
    }

    fn all_reduce_f64(&self, buf: &mut [f64], what: &str) -> Result<()> {
        self.sum(buf, what)
    }

    fn all_gather_u64(&self, mine: &[u64], what: &str) -> Result<Vec<u64>> {
        let mut mpi = self.lock();
        self.meet(&mut mpi, what)?;
        let mut all = vec![0u64; mine.len() * self.world];
        let world = &mpi.world;
        mpi::request::scope(|scope| {
            let request = world.immediate_all_gather_into(scope, mine, &mut all[..]);
            self.complete(world, request, what);
        });
        Ok(all)
    }

    fn abort(&self, code: i32) -> ! {
        // Not through the mutex: the call that failed may be the one holding it.
        // SAFETY: MPI_Abort on MPI_COMM_WORLD ends every process of the job, this one too.
        unsafe {
            mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
        }
        std::process::exit(code)
    }
}

/// A rank other than 0 answers rank 0's pings while it waits (see [`MpiGroup::stalled`]).
fn answer_pings(world: &SimpleCommunicator) {
    let lead = world.process_at_rank(0);
    while lead.immediate_probe_with_tag(PING).is_some() {
        let (token, _) = lead.receive_vec_with_tag::<u64>(PING);
        lead.send_with_tag(&token[..], PONG);
    }
}

/// Polling without burning a core the training needs: yield at first, then sleep up to 1 ms.
#[derive(Default)]
struct Backoff {
    polls: u32,
}

impl Backoff {
    fn pause(&mut self) {
        self.polls += 1;
        if self.polls < 64 {
            std::thread::yield_now();
        } else {
            let us = (self.polls as u64 - 63).min(20) * 50;
            std::thread::sleep(Duration::from_micros(us));
        }
    }
}
