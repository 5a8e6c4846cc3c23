//! The choice of what sums a step's flat gradient buffer over the ranks
//! (`train.gradient_sync`): the process group itself on host memory ([`HostSync`], MPI: the
//! CPU path), or NCCL between the GPUs ([`super::nccl`]).
//!
//! Every rank must pick the same one (their collectives would otherwise never meet), so the
//! choice is agreed over the group: `auto` takes NCCL only when every rank trains on a CUDA
//! device and can load libnccl.
use std::sync::Arc;

use burn::DispatchDevice;

use super::{GradientSync, HostSync, ProcessGroup};
use crate::config::GradientSyncKind;
use crate::error::{Error, Result};

/// The gradient sum `kind` asks for, agreed by every rank of `group`; `devices` are this
/// process's (NCCL runs on the first, where the step gathers the gradients).
pub fn gradient_sync(
    kind: GradientSyncKind,
    group: &Arc<dyn ProcessGroup>,
    devices: &[DispatchDevice],
) -> Result<Arc<dyn GradientSync>> {
    // One process alone sums nothing: `auto` spares it NCCL's copies (`nccl` still runs the
    // one-rank communicator, the bench's check that NCCL works on a machine).
    let alone = group.world() == 1 && kind == GradientSyncKind::Auto;
    if kind == GradientSyncKind::Mpi || alone {
        return Ok(Arc::new(HostSync(group.clone())));
    }
    let ordinal = devices.first().and_then(crate::device::cuda_index);
    let able = ordinal.is_some() && nccl_library_present();
    let all = group.all_gather_u64(&[able as u64], "the choice of gradient sum")?;
    let unable: Vec<String> = (0..group.world())
        .filter(|&r| all[r] == 0)
        .map(|r| r.to_string())
        .collect();
    match (kind, unable.is_empty(), ordinal) {
        (_, true, Some(ordinal)) => nccl_sync(group, ordinal),
        (GradientSyncKind::Nccl, _, _) => Err(Error::config(
            "train.gradient_sync",
            format!(
                "`nccl` needs every process on a CUDA device with libnccl.so.2 loadable; rank(s) {} \
                 cannot (this one trains on {}): use `mpi` or `auto`",
                unable.join(", "),
                devices
                    .first()
                    .map_or("nothing".into(), |d| format!("{d:?}"))
            ),
        )),
        _ => Ok(Arc::new(HostSync(group.clone()))),
    }
}

#[cfg(feature = "cuda")]
fn nccl_library_present() -> bool {
    super::nccl::library_present()
}

#[cfg(not(feature = "cuda"))]
fn nccl_library_present() -> bool {
    false
}

#[cfg(feature = "cuda")]
fn nccl_sync(group: &Arc<dyn ProcessGroup>, ordinal: usize) -> Result<Arc<dyn GradientSync>> {
    Ok(Arc::new(super::nccl::NcclSync::new(
        group.clone(),
        ordinal,
    )?))
}

#[cfg(not(feature = "cuda"))]
fn nccl_sync(_: &Arc<dyn ProcessGroup>, _: usize) -> Result<Arc<dyn GradientSync>> {
    unreachable!("no rank is able to use NCCL in a build without CUDA")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::DeviceSpec;
    use crate::distributed::tests::on_ranks;

    #[test]
    fn auto_sums_on_the_host_off_cuda_and_nccl_is_refused_by_key() {
        let flex = vec![DeviceSpec::Flex.device().unwrap()];
        let out = on_ranks(2, |g| {
            let group: Arc<dyn ProcessGroup> = Arc::new(g.clone());
            let auto = gradient_sync(GradientSyncKind::Auto, &group, &flex).unwrap();
            let mut buf = vec![1.0 + g.rank() as f32, 2.0];
            auto.all_reduce_gradients(&mut buf, "test").unwrap();
            let nccl = gradient_sync(GradientSyncKind::Nccl, &group, &flex).map(|_| ());
            (auto.describe(), buf, nccl.unwrap_err().to_string())
        });
        for (describe, buf, err) in out {
            assert!(describe.contains("host"), "{describe}");
            assert_eq!(buf, vec![3.0, 4.0]);
            assert!(err.contains("train.gradient_sync"), "{err}");
            assert!(err.contains("rank(s) 0, 1"), "{err}");
        }
    }
}
