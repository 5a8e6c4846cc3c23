//! One model trained by several processes (`mpirun -np N pixmim train ...`, `srun`): the
//! process group they sum their gradients over, and the checks that keep them one run.
//!
//! Each process builds its rows of every global batch ([`crate::data::loader::BatchRows`]),
//! runs the same [`crate::engine::step::Step`] on its own devices, and the step sums the
//! gradients over the group once per optimiser step ([`gradients`]): every replica then makes
//! the same AdamW update, so the processes hold the same weights without sending them. What
//! keeps that true is checked, not assumed: the processes must agree on the run at start-up
//! ([`agree`]) and their weights are compared every `train.replica_check_every` steps
//! ([`check_replicas`]). Only rank 0 writes the run folder.
//!
//! The group itself is a trait so that the step does not know what carries the sums: MPI
//! ([`mpi`], host buffers). The gradients' sum, the one large one, goes through a
//! [`GradientSync`] ([`sync`] picks it): the group's own, or NCCL between the GPUs ([`nccl`]),
//! bootstrapped over the group.
pub mod gradients;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "cuda")]
pub mod nccl;
pub mod sync;
pub mod watchdog;

use std::sync::Arc;
use std::time::Duration;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::prelude::*;

use crate::error::{Error, Result};

/// The processes training one model. Every rank makes the same calls in the same order; a
/// call that does not complete within the group's time-out stops every process with a message
/// naming the rank that did not arrive (a hang is never silent).
pub trait ProcessGroup: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// What carries the group and where this rank runs, for the run's first lines.
    fn describe(&self) -> String;
    /// How long a call waits for the other ranks before the run is stopped (`train.sync_timeout_s`).
    fn set_timeout(&self, timeout: Duration);
    /// The time-out [`ProcessGroup::set_timeout`] set (600 s unless set).
    fn timeout(&self) -> Duration {
        Duration::from_secs(600)
    }
    /// Element-wise sum over the ranks, in place. `what` names the values in error messages.
    fn all_reduce_f32(&self, buf: &mut [f32], what: &str) -> Result<()>;
    fn all_reduce_f64(&self, buf: &mut [f64], what: &str) -> Result<()>;
    /// Every rank's `mine` (the same length on every rank), rank after rank.
    fn all_gather_u64(&self, mine: &[u64], what: &str) -> Result<Vec<u64>>;
    /// Stop every process of the group with exit code `code` (after an error on this one, so
    /// that the others do not wait for it until their time-out).
    fn abort(&self, code: i32) -> !;
}

/// Sums a flat f32 buffer (one optimiser step's gradients, in the ranks' common order) over
/// the process group, in place.
pub trait GradientSync: Send + Sync {
    fn all_reduce_gradients(&self, flat: &mut [f32], what: &str) -> Result<()>;
    /// What carries the sums, for the run's first lines.
    fn describe(&self) -> String;
}

/// The process group's own sum, on host memory.
pub struct HostSync(pub Arc<dyn ProcessGroup>);

impl GradientSync for HostSync {
    fn all_reduce_gradients(&self, flat: &mut [f32], what: &str) -> Result<()> {
        self.0.all_reduce_f32(flat, what)
    }
    fn describe(&self) -> String {
        "the process group (host buffers)".into()
    }
}

/// One process alone, each sum the identity: NCCL's one-rank communicator runs over it
/// (`pixmim bench --only allreduce --device cuda` without a launcher).
pub struct Solo;

impl ProcessGroup for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn describe(&self) -> String {
        "one process".into()
    }
    fn set_timeout(&self, _: Duration) {}
    fn all_reduce_f32(&self, _: &mut [f32], _: &str) -> Result<()> {
        Ok(())
    }
    fn all_reduce_f64(&self, _: &mut [f64], _: &str) -> Result<()> {
        Ok(())
    }
    fn all_gather_u64(&self, mine: &[u64], _: &str) -> Result<Vec<u64>> {
        Ok(mine.to_vec())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// Report `e` as this rank's and stop every process of the group with its exit code (the
/// others would otherwise wait for this one until their time-out).
pub fn stop(group: &dyn ProcessGroup, e: &Error) -> ! {
    use std::io::Write;
    // One write, so that the launcher does not interleave it with another rank's lines.
    let line = format!("error (rank {} of {}): {e}\n", group.rank(), group.world());
    let _ = std::io::stderr().write_all(line.as_bytes());
    group.abort(e.exit_code())
}

/// The launcher this process was started by, from the variables it sets: Open MPI's
/// `mpirun` (`OMPI_COMM_WORLD_SIZE`), PMIx launchers such as `srun --mpi=pmix` (`PMIX_RANK`),
/// and MPICH / Intel MPI's Hydra or `srun --mpi=pmi2` (`PMI_SIZE`). `None`: a plain start, one
/// process, no MPI initialised.
pub fn launcher() -> Option<&'static str> {
    [
        ("OMPI_COMM_WORLD_SIZE", "mpirun (Open MPI)"),
        ("PMIX_RANK", "a PMIx launcher (srun --mpi=pmix, prterun)"),
        (
            "PMI_SIZE",
            "a PMI launcher (MPICH / Intel MPI, srun --mpi=pmi2)",
        ),
    ]
    .into_iter()
    .find(|(var, _)| std::env::var_os(var).is_some())
    .map(|(_, name)| name)
}

/// `--device` for this process when a launcher started several: a bare `cuda` (or `gpu`)
/// means the GPU of the process's local rank on its node (`OMPI_COMM_WORLD_LOCAL_RANK`,
/// `SLURM_LOCALID`, `MPI_LOCALRANKID`), or `cuda:0` when `CUDA_VISIBLE_DEVICES` leaves the
/// process one GPU (`srun --gpus-per-task=1`). Anything else is taken as given.
pub fn per_process_device(given: &str) -> String {
    let local_rank = [
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "SLURM_LOCALID",
        "MPI_LOCALRANKID",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok()?.parse().ok());
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    device_for_local_rank(given, local_rank, visible.as_deref())
}

fn device_for_local_rank(given: &str, local_rank: Option<usize>, visible: Option<&str>) -> String {
    let bare = matches!(given.trim(), "cuda" | "gpu");
    match (bare, local_rank, visible) {
        (true, _, Some(v)) if !v.is_empty() && !v.contains(',') => "cuda:0".into(),
        (true, Some(r), _) => format!("cuda:{r}"),
        _ => given.into(),
    }
}

/// FNV-1a, 64 bits: a hash that is the same in every process and build (std's is not promised
/// to be), for comparing what the ranks hold.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut h: u64) -> u64 {
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

pub fn hash_str(s: &str) -> u64 {
    fnv1a(s.bytes(), FNV_OFFSET)
}

/// Refuse (exit 2) a run whose ranks disagree on any of `facts` (what, value), naming the
/// first fact and the ranks that differ from rank 0; e.g. a config changed on one node, a
/// different data list, or a checkpoint one rank cannot see.
pub fn agree(group: &dyn ProcessGroup, facts: &[(&str, u64)]) -> Result<()> {
    let mine: Vec<u64> = facts.iter().map(|(_, v)| *v).collect();
    let all = group.all_gather_u64(&mine, "the start-up agreement")?;
    for (f, (what, _)) in facts.iter().enumerate() {
        let lead = all[f];
        let differ: Vec<String> = (1..group.world())
            .filter(|r| all[r * facts.len() + f] != lead)
            .map(|r| r.to_string())
            .collect();
        if !differ.is_empty() {
            return Err(Error::Usage(format!(
                "the processes of this run disagree: {what} of rank {} differs from rank 0's; \
                 every process must be started with the same command, config, data and run folder",
                differ.join(", ")
            )));
        }
    }
    Ok(())
}

/// A hash of the bits of every float parameter of `module`, in the order of its structure
/// (the same on every rank): equal replicas hash equal, and one bit apart does not.
pub fn parameter_checksum<B: Backend, M: Module<B>>(module: &M) -> u64 {
    struct Hash(u64);
    impl<B: Backend> ModuleVisitor<B> for Hash {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let data = param.val().into_data().convert::<f32>();
            let values = data.as_slice::<f32>().expect("f32 after convert");
            self.0 = fnv1a(
                values.iter().flat_map(|v| v.to_bits().to_le_bytes()),
                self.0,
            );
        }
    }
    let mut h = Hash(FNV_OFFSET);
    module.visit(&mut h);
    h.0
}

/// Stop the run (exit 1) if the replicas' weights are no longer the same after `step`
/// updates: the ranks' checksums of the model and the trainable target are compared.
pub fn check_replicas<B, M, T>(
    group: &dyn ProcessGroup,
    (model, target): (&M, &T),
    step: usize,
) -> Result<()>
where
    B: burn::tensor::backend::AutodiffBackend,
    M: AutodiffModule<B>,
    T: AutodiffModule<B>,
{
    let mine = [parameter_checksum(model), parameter_checksum(target)];
    let all = group.all_gather_u64(&mine, &format!("the replica check after step {step}"))?;
    let drifted: Vec<String> = (1..group.world())
        .filter(|r| all[2 * r..2 * r + 2] != all[..2])
        .map(|r| r.to_string())
        .collect();
    if drifted.is_empty() {
        return Ok(());
    }
    Err(Error::Training(format!(
        "the replicas drifted apart: after step {step} the weights of rank {} differ from rank 0's \
         (a nondeterministic kernel, or different code on that node); stopping. The last \
         checkpoint holds rank 0's weights",
        drifted.join(", ")
    )))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Barrier, Mutex};

    /// A group of threads in one process: each "rank" is a thread, the sums go through shared
    /// memory. Enough to test what the training code does with a group, without MPI.
    #[derive(Clone)]
    pub struct Threads {
        rank: usize,
        world: usize,
        shared: Arc<(Barrier, Mutex<Vec<Vec<f64>>>)>,
    }

    impl Threads {
        pub fn group(world: usize) -> Vec<Threads> {
            let shared = Arc::new((Barrier::new(world), Mutex::new(vec![Vec::new(); world])));
            (0..world)
                .map(|rank| Threads {
                    rank,
                    world,
                    shared: shared.clone(),
                })
                .collect()
        }

        /// Every rank's `mine`, rank after rank.
        fn gather(&self, mine: Vec<f64>) -> Vec<f64> {
            let (barrier, slots) = &*self.shared;
            slots.lock().unwrap()[self.rank] = mine;
            barrier.wait();
            let all = slots.lock().unwrap().concat();
            barrier.wait();
            all
        }

        fn sum(&self, buf: &[f64]) -> Vec<f64> {
            let all = self.gather(buf.to_vec());
            (0..buf.len())
                .map(|i| (0..self.world).map(|r| all[r * buf.len() + i]).sum())
                .collect()
        }
    }

    impl ProcessGroup for Threads {
        fn rank(&self) -> usize {
            self.rank
        }
        fn world(&self) -> usize {
            self.world
        }
        fn describe(&self) -> String {
            format!("threads, rank {} of {}", self.rank, self.world)
        }
        fn set_timeout(&self, _: Duration) {}
        fn all_reduce_f32(&self, buf: &mut [f32], _: &str) -> Result<()> {
            let wide: Vec<f64> = buf.iter().map(|&v| v as f64).collect();
            for (b, s) in buf.iter_mut().zip(self.sum(&wide)) {
                *b = s as f32;
            }
            Ok(())
        }
        fn all_reduce_f64(&self, buf: &mut [f64], _: &str) -> Result<()> {
            let s = self.sum(buf);
            buf.copy_from_slice(&s);
            Ok(())
        }
        fn all_gather_u64(&self, mine: &[u64], _: &str) -> Result<Vec<u64>> {
            // u64 -> f64 bits and back: exact.
            let bits = mine.iter().map(|&v| f64::from_bits(v)).collect();
            Ok(self.gather(bits).into_iter().map(f64::to_bits).collect())
        }
        fn abort(&self, code: i32) -> ! {
            panic!("abort({code})")
        }
    }

    /// Run `f(rank's group)` on one thread per rank; the results in rank order.
    pub fn on_ranks<R: Send>(world: usize, f: impl Fn(&Threads) -> R + Sync) -> Vec<R> {
        let groups = Threads::group(world);
        std::thread::scope(|s| {
            let handles: Vec<_> = groups.iter().map(|g| s.spawn(|| f(g))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn a_bare_cuda_device_is_the_local_ranks_gpu() {
        assert_eq!(device_for_local_rank("cuda", Some(3), None), "cuda:3");
        assert_eq!(
            device_for_local_rank("gpu", Some(1), Some("0,1,2,3")),
            "cuda:1"
        );
        // srun --gpus-per-task=1: the one visible GPU.
        assert_eq!(device_for_local_rank("cuda", Some(3), Some("5")), "cuda:0");
        assert_eq!(device_for_local_rank("cuda:2", Some(3), None), "cuda:2");
        assert_eq!(device_for_local_rank("cpu", Some(3), None), "cpu");
        assert_eq!(device_for_local_rank("cuda", None, None), "cuda");
    }

    #[test]
    fn agree_names_the_fact_and_the_rank_that_differs() {
        let results = on_ranks(3, |g| {
            let data = if g.rank() == 2 { 8 } else { 7 };
            agree(g, &[("the config", 1), ("the data list", data)])
        });
        for r in &results {
            let e = r.as_ref().unwrap_err().to_string();
            assert!(e.contains("the data list of rank 2 differs"), "{e}");
            assert_eq!(r.as_ref().unwrap_err().exit_code(), 2);
        }
        let same = on_ranks(3, |g| agree(g, &[("the config", 1), ("the data list", 7)]));
        assert!(same.iter().all(|r| r.is_ok()));
    }

    #[test]
    fn the_checksum_sees_one_bit_and_the_replica_check_names_the_rank() {
        type B = crate::RunBackend;
        let device = crate::device::DeviceSpec::Flex.train_device().unwrap();
        let a: burn::nn::Linear<B> = crate::init::HostInit::new(7).linear(3, 2, &device);
        let b = a.clone();
        assert_eq!(parameter_checksum(&a), parameter_checksum(&b));
        let mut w = a
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap();
        w[4] = f32::from_bits(w[4].to_bits() ^ 1);
        let mut c = a.clone();
        c.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [3, 2]), &device));
        assert_ne!(parameter_checksum(&a), parameter_checksum(&c));

        let results = on_ranks(3, |g| {
            let model = if g.rank() == 1 { c.clone() } else { a.clone() };
            check_replicas::<B, _, _>(g, (&model, &a), 40)
        });
        for r in results {
            let e = r.unwrap_err();
            assert!(
                e.to_string()
                    .contains("after step 40 the weights of rank 1 differ"),
                "{e}"
            );
            assert_eq!(e.exit_code(), 1);
        }
    }
}
