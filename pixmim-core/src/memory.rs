//! Memory pre-flight: before the first step, estimate the peak memory of a training step on
//! its devices and compare it with what they have, so that a run that cannot fit is refused
//! with what would fit, instead of being killed by the kernel (or the CUDA allocator) minutes
//! in with nothing said.
//!
//! The estimate is parameters, gradients and AdamW's two moments (f32), plus the activations
//! autodiff keeps for backward, which each method states per image from its shapes
//! (`Method::activation_floats_per_image`), plus the process's own baseline and a checkpoint
//! being written on a CPU. Measured peaks on burn-flex are 0.86-1.05 of it for every method's
//! tiny preset and 0.86-0.93 for MAE-B and ConvMAE-B (docs/performance.md, "Memory").
use crate::error::{Error, Result};

/// What a CPU run's process holds besides the model and step: the binary, burn's and the
/// allocator's arenas, the data workers' buffers.
pub const CPU_BASELINE_BYTES: f64 = 128.0 * MIB;

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// Environment variable that replaces the measured available memory (bytes, or with a
/// `K`/`M`/`G` suffix): for tests, and for users who want to leave room for other work.
pub const AVAILABLE_ENV: &str = "PIXMIM_MEMORY_AVAILABLE";

/// Floats autodiff keeps per image for one pre-norm ViT block over `tokens` tokens: about
/// four copies of the width per token (the LayerNorm outputs, q/k/v, the attention output),
/// one of the MLP's hidden layer, and seven heads x tokens^2 maps (the scores, their scaling,
/// the softmax and its backward's inputs). The coefficients are fitted to the peaks measured
/// on burn-flex (docs/performance.md, "Memory"), not derived op by op.
pub fn vit_block_floats(tokens: usize, dim: usize, heads: usize, mlp_hidden: usize) -> f64 {
    let (n, d, h, m) = (tokens as f64, dim as f64, heads as f64, mlp_hidden as f64);
    n * (4.0 * d + m) + 7.0 * h * n * n
}

/// A training step's memory on one device.
#[derive(Clone, Debug, PartialEq)]
pub struct StepMemory {
    pub trainable: usize,
    pub frozen: usize,
    /// Floats of activations per image (None: the method does not say).
    pub activation_floats_per_image: Option<f64>,
    /// Gradients are summed over `accum_iter` micro-batches in a second buffer.
    pub accumulates: bool,
    /// Add the CPU process baseline.
    pub host: bool,
}

impl StepMemory {
    /// Weights, gradients, AdamW moments (and the accumulation buffer), in bytes.
    pub fn model_bytes(&self) -> f64 {
        let t = self.trainable as f64;
        let grads = if self.accumulates { 2.0 * t } else { t };
        4.0 * (t + self.frozen as f64 + grads + 2.0 * t)
    }

    /// Activation bytes per image.
    pub fn per_image_bytes(&self) -> f64 {
        4.0 * self.activation_floats_per_image.unwrap_or(0.0)
    }

    /// The step's peak on one device at `batch` images per device.
    pub fn bytes(&self, batch: usize) -> f64 {
        let base = if self.host { CPU_BASELINE_BYTES } else { 0.0 };
        base + self.model_bytes() + batch as f64 * self.per_image_bytes()
    }

    /// Writing a checkpoint holds, in host memory, the weights and both moments three times
    /// over (as host tensors, as bytes, as the serialised file) beside the model itself.
    pub fn checkpoint_bytes(&self) -> f64 {
        let (t, f) = (self.trainable as f64, self.frozen as f64);
        let state = 4.0 * (3.0 * t + f);
        let base = if self.host { CPU_BASELINE_BYTES } else { 0.0 };
        base + state + 3.0 * state
    }
}

/// A run's plan: `devices` devices (replicas of the model), `batch` images per step over all
/// of them, `accum_iter` steps per update; on a CPU every replica lives in the same memory.
/// With several `processes` (`mpirun`) this is one process's: `batch` is its share.
#[derive(Clone, Debug)]
pub struct Plan {
    pub step: StepMemory,
    pub devices: usize,
    pub batch: usize,
    pub processes: usize,
    pub accum_iter: usize,
    pub shared_host: bool,
}

impl Plan {
    /// Peak bytes against the memory it is compared with: the sum over replicas on a host,
    /// one device's share on a GPU.
    pub fn bytes(&self) -> f64 {
        self.bytes_at(self.batch)
    }

    fn bytes_at(&self, batch: usize) -> f64 {
        let per_device = batch.div_ceil(self.devices.max(1));
        if self.shared_host {
            // One process baseline, every replica's model and step; or a checkpoint being
            // written, whichever is more.
            let one = self.step.bytes(per_device);
            let base = if self.step.host {
                CPU_BASELINE_BYTES
            } else {
                0.0
            };
            (base + (one - base) * self.devices as f64).max(self.step.checkpoint_bytes())
        } else {
            self.step.bytes(per_device)
        }
    }

    /// The largest `train.batch_size` (dividing the effective batch and the device count
    /// dividing it) that fits in `available` bytes, with the `train.accum_iter` that keeps
    /// the effective batch, and so the learning rate, the same.
    pub fn largest_fit(&self, available: f64) -> Option<(usize, usize)> {
        let effective = self.batch * self.accum_iter;
        (1..=self.batch)
            .rev()
            .filter(|b| effective.is_multiple_of(*b) && b.is_multiple_of(self.devices.max(1)))
            .find(|&b| self.bytes_at(b) <= available)
            .map(|b| (b, effective / b))
    }
}

/// Bytes this process may still allocate on the host: `MemAvailable`, lowered to the cgroup's
/// limit minus its usage when the process runs in one (containers, Slurm jobs); the
/// [`AVAILABLE_ENV`] variable replaces it.
pub fn available_host_bytes() -> Result<Option<u64>> {
    if let Ok(v) = std::env::var(AVAILABLE_ENV) {
        return parse_bytes(&v).map(Some).ok_or_else(|| {
            Error::Usage(format!(
                "{AVAILABLE_ENV}={v:?}: expected bytes, e.g. 2000000000 or 2G"
            ))
        });
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(|m| {
        let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    });
    Ok(match (available, cgroup_headroom()) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    })
}

/// cgroup v2 `memory.max - memory.current`, or v1's limit minus usage.
fn cgroup_headroom() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let num = |s: Option<String>| s.and_then(|s| s.trim().parse::<u64>().ok());
    let (limit, used) = match num(read("/sys/fs/cgroup/memory.max")) {
        Some(l) => (l, num(read("/sys/fs/cgroup/memory.current"))?),
        None => (
            num(read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))?,
            num(read("/sys/fs/cgroup/memory/memory.usage_in_bytes"))?,
        ),
    };
    // v1 reports "no limit" as a huge number.
    (limit < (1 << 60)).then(|| limit.saturating_sub(used))
}

fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v.is_finite() && v > 0.0).then_some((v * mult as f64) as u64)
}

/// Bytes for people: GiB, or MiB below one GiB.
pub fn gib(bytes: f64) -> String {
    if bytes < GIB {
        format!("{:.1} MiB", bytes / MIB)
    } else {
        format!("{:.2} GiB", bytes / GIB)
    }
}

/// Suggestions leave this much of the available memory free: the estimate is within about a
/// quarter of the measured peaks, and the machine runs other things.
const SUGGESTION_HEADROOM: f64 = 0.85;

/// Refuse a plan that does not fit in `available` bytes on `what` (e.g. "this host"), naming
/// the estimate, what is available and what would fit.
pub fn check(plan: &Plan, available: u64, what: &str) -> Result<()> {
    let need = plan.bytes();
    let available = available as f64;
    if need <= available {
        return Ok(());
    }
    // The config's batch is global: each process's share times the processes.
    let p = plan.processes.max(1);
    let fit = match plan.largest_fit(SUGGESTION_HEADROOM * available) {
        Some((b, a)) => format!(
            "--set train.batch_size={} --set train.accum_iter={a} (the same effective batch \
             of {}, so the same learning rate; {} estimated), or --preset tiny",
            b * p,
            plan.batch * p * plan.accum_iter,
            gib(plan.bytes_at(b)),
        ),
        None => "--preset tiny: even one image per device does not fit".into(),
    };
    Err(Error::config(
        "train.batch_size",
        format!(
            "a training step at batch {} needs about {} ({} for weights, gradients and AdamW \
             state per replica, {} of activations per image) but {what} has {} available. \
             What fits: {fit}. To train anyway: --set train.memory_check=false.",
            match p {
                1 => plan.batch.to_string(),
                _ => format!("{} ({} per process)", plan.batch * p, plan.batch),
            },
            gib(need),
            gib(plan.step.model_bytes()),
            gib(plan.step.per_image_bytes()),
            gib(available),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(batch: usize, accum: usize, devices: usize) -> Plan {
        Plan {
            step: StepMemory {
                trainable: 1_000_000,
                frozen: 0,
                activation_floats_per_image: Some(10.0 * MIB / 4.0),
                accumulates: accum > 1,
                host: true,
            },
            devices,
            batch,
            processes: 1,
            accum_iter: accum,
            shared_host: true,
        }
    }

    #[test]
    fn the_estimate_adds_model_state_and_activations_per_image() {
        let p = plan(8, 1, 1);
        // 4 bytes x (weights + grads + two moments) of 1M parameters, 10 MiB per image.
        let model = 16.0e6;
        assert!((p.step.model_bytes() - model).abs() < 1.0);
        let want = CPU_BASELINE_BYTES + model + 8.0 * 10.0 * MIB;
        assert!((p.bytes() - want).abs() < 1.0);
        // Two replicas on one host: two models, the same images split, one baseline.
        let two = plan(8, 1, 2);
        assert!((two.bytes() - (want + model)).abs() < 1.0);
    }

    #[test]
    fn what_fits_keeps_the_effective_batch() {
        let p = plan(128, 2, 1);
        let budget = p.bytes_at(16) / SUGGESTION_HEADROOM + 1.0;
        assert_eq!(p.largest_fit(budget), Some((16, 16)));
        let e = check(&p, budget as u64, "this host").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        for part in [
            "train.batch_size=16",
            "train.accum_iter=16",
            "256",
            "train.memory_check=false",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
        assert!(check(&p, p.bytes() as u64 + 1, "this host").is_ok());
        // Two devices: only even batches.
        assert_eq!(
            plan(6, 1, 2).largest_fit(plan(6, 1, 2).bytes_at(3)),
            Some((2, 3))
        );
        let tiny = check(&p, 1, "this host").unwrap_err().to_string();
        assert!(tiny.contains("--preset tiny"), "{tiny}");
        // One of 4 processes holds a quarter of the global batch; the advice is global.
        let shared = Plan { processes: 4, ..p };
        let msg = check(&shared, budget as u64, "each GPU")
            .unwrap_err()
            .to_string();
        for part in [
            "batch 512 (128 per process)",
            "train.batch_size=64",
            "of 1024",
        ] {
            assert!(msg.contains(part), "{part}: {msg}");
        }
    }

    #[test]
    fn available_memory_can_be_given() {
        assert_eq!(parse_bytes("2G"), Some(2 << 30));
        assert_eq!(parse_bytes("1500000"), Some(1_500_000));
        assert_eq!(parse_bytes("0.5k"), Some(512));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1"), None);
        // The machine's own figure is there on Linux.
        assert!(cgroup_headroom().is_some() || std::fs::metadata("/proc/meminfo").is_ok());
    }

    #[test]
    fn a_vit_block_counts_its_attention_quadratically() {
        let small = vit_block_floats(50, 768, 12, 3072);
        let long = vit_block_floats(200, 768, 12, 3072);
        // 4x the tokens: 4x the per-token part, 16x the scores.
        let linear = 200.0 * (4.0 * 768.0 + 3072.0);
        assert!((long - linear - 16.0 * (small - linear / 4.0)).abs() < 1e-6);
    }
}
