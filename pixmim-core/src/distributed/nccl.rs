//! NCCL for the gradient sums of a process group whose ranks train on CUDA devices
//! (`train.gradient_sync`), bootstrapped over the group as Horovod does: rank 0 makes NCCL's
//! unique id and the group hands it to every rank, each of which joins the communicator on
//! its first GPU. NCCL then takes NVLink within a node and InfiniBand (GPUDirect) across.
//!
//! burn 0.21 gives no access to the device memory behind a `Dispatch` tensor, so the flat
//! buffer the step has already read to the host is copied into a device buffer owned here,
//! summed there, and read back: two host-device copies more than a sum on the gradients' own
//! memory, which a burn that exposes the pointer would remove in this file alone.
//!
//! libnccl is loaded at run time (cudarc's dynamic loading, as for libcuda), so the build needs
//! no NCCL; [`library_present`] says whether a machine has it.
//!
//! Every NCCL call that can block (the all-reduce, the synchronisation after it) runs under a
//! [`Deadline`] of the group's time-out, which aborts the communicator if a peer stalls inside
//! NCCL; so the communicator is held as NCCL's raw handle, which the watcher can abort from
//! its own thread (cudarc's `Comm` keeps it private).
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtrMut};
use cudarc::nccl::{result, sys, Id};

use super::watchdog::Deadline;
use super::{GradientSync, ProcessGroup};
use crate::error::{Error, Result};

/// NCCL's communicator handle, aborted (once) by whoever gets there first: the watchdog of
/// a stalled call, or the drop at the end.
struct RawComm {
    handle: Mutex<Option<usize>>,
}

impl RawComm {
    fn get(&self) -> Option<sys::ncclComm_t> {
        self.handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|h| h as sys::ncclComm_t)
    }
    /// `ncclCommAbort`: pending and future calls on it return with an error.
    fn abort(&self) {
        if let Some(h) = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // SAFETY: a handle from ncclCommInitRank, aborted once (taken out above).
            let _ = unsafe { result::comm_abort(h as sys::ncclComm_t) };
        }
    }
}

impl Drop for RawComm {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Whether libnccl can be loaded here.
pub fn library_present() -> bool {
    // SAFETY: only tries to dlopen the library's candidate names.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

/// A rank's membership of the group's NCCL communicator.
pub struct NcclSync {
    group: Arc<dyn ProcessGroup>,
    ordinal: usize,
    comm: Arc<RawComm>,
    inner: Mutex<Inner>,
}

struct Inner {
    stream: Arc<CudaStream>,
    /// The device copy of the flat buffer, kept between steps (same length each time).
    buffer: Option<CudaSlice<f32>>,
}

fn nccl_error(ordinal: usize, doing: &str, e: impl std::fmt::Debug) -> Error {
    Error::Training(format!("NCCL on cuda:{ordinal}: {doing} failed: {e:?}"))
}

impl NcclSync {
    /// Join the communicator of every rank of `group` on CUDA device `ordinal`. Every rank
    /// calls this together (it is collective over the group, then inside NCCL).
    pub fn new(group: Arc<dyn ProcessGroup>, ordinal: usize) -> Result<Self> {
        let id = if group.rank() == 0 {
            id_words(&Id::new().map_err(|e| nccl_error(ordinal, "making the unique id", e))?)
        } else {
            [0; ID_WORDS]
        };
        let all = group.all_gather_u64(&id, "NCCL's unique id")?;
        let id = id_from_words(&all[..ID_WORDS]);
        let ctx = CudaContext::new(ordinal).map_err(|e| nccl_error(ordinal, "the context", e))?;
        let stream = ctx
            .new_stream()
            .map_err(|e| nccl_error(ordinal, "a stream", e))?;
        let mut handle = std::mem::MaybeUninit::uninit();
        let (world, rank) = (group.world() as i32, group.rank() as i32);
        // SAFETY: NCCL writes the handle on success, which is checked before it is read.
        let handle = unsafe {
            result::comm_init_rank(handle.as_mut_ptr(), world, raw_id(&id), rank)
                .map_err(|e| nccl_error(ordinal, "joining the communicator", e))?;
            handle.assume_init()
        };
        Ok(Self {
            group,
            ordinal,
            comm: Arc::new(RawComm {
                handle: Mutex::new(Some(handle as usize)),
            }),
            inner: Mutex::new(Inner {
                stream,
                buffer: None,
            }),
        })
    }
}

impl GradientSync for NcclSync {
    fn all_reduce_gradients(&self, flat: &mut [f32], what: &str) -> Result<()> {
        // Meet over the group first: its time-out names a rank that died or hangs, for which
        // NCCL itself would wait forever; and the ranks' buffers must be the same length.
        let n = flat.len();
        let lengths = self.group.all_gather_u64(&[n as u64], what)?;
        if let Some(r) = lengths.iter().position(|&l| l != n as u64) {
            return Err(Error::Training(format!(
                "{what}: rank {r} sums {} values, this rank {n}",
                lengths[r]
            )));
        }
        if n == 0 {
            return Ok(());
        }
        let o = self.ordinal;
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { stream, buffer } = &mut *inner;
        if buffer.as_ref().is_none_or(|b| b.len() != n) {
            *buffer = None; // free the old one first
            *buffer = Some(
                stream
                    .alloc_zeros::<f32>(n)
                    .map_err(|e| nccl_error(o, "allocating the gradient buffer", e))?,
            );
        }
        let device = buffer.as_mut().expect("allocated above");
        stream
            .memcpy_htod(&*flat, device)
            .map_err(|e| nccl_error(o, "copying the gradients in", e))?;
        let deadline = Deadline::new(self.group.rank(), self.group.timeout());
        let comm = self.comm.clone();
        let abort = {
            let comm = self.comm.clone();
            move || comm.abort()
        };
        deadline.run(&format!("the NCCL all-reduce of {what}"), abort, || {
            let handle = comm
                .get()
                .ok_or_else(|| nccl_error(o, "the all-reduce", "the communicator was aborted"))?;
            let (ptr, sync) = device.device_ptr_mut(stream);
            // SAFETY: `ptr` is `n` f32 of device memory owned by this rank, on `stream`.
            let summed = unsafe {
                result::all_reduce(
                    ptr as *const std::ffi::c_void,
                    ptr as *mut std::ffi::c_void,
                    n,
                    sys::ncclDataType_t::ncclFloat32,
                    sys::ncclRedOp_t::ncclSum,
                    handle,
                    stream.cu_stream() as sys::cudaStream_t,
                )
            };
            drop(sync);
            summed.map_err(|e| nccl_error(o, &format!("the all-reduce of {what}"), e))?;
            stream
                .memcpy_dtoh(&*device, flat)
                .map_err(|e| nccl_error(o, "copying the sums out", e))?;
            stream
                .synchronize()
                .map_err(|e| nccl_error(o, &format!("waiting for {what}"), e))
        })?
    }

    fn describe(&self) -> String {
        format!(
            "NCCL, rank {} of {} on cuda:{}",
            self.group.rank(),
            self.group.world(),
            self.ordinal
        )
    }
}

/// NCCL's unique id is 128 bytes; the group sends u64s.
const ID_WORDS: usize = 16;

fn id_words(id: &Id) -> [u64; ID_WORDS] {
    let mut words = [0u64; ID_WORDS];
    for (w, chunk) in words.iter_mut().zip(id.internal().chunks(8)) {
        let bytes: Vec<u8> = chunk.iter().map(|&c| c as u8).collect();
        *w = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    }
    words
}

fn raw_id(id: &Id) -> sys::ncclUniqueId {
    sys::ncclUniqueId {
        internal: *id.internal(),
    }
}

fn id_from_words(words: &[u64]) -> Id {
    let mut internal = [0 as std::ffi::c_char; 128];
    for (chunk, w) in internal.chunks_mut(8).zip(words) {
        for (c, b) in chunk.iter_mut().zip(w.to_le_bytes()) {
            *c = b as std::ffi::c_char;
        }
    }
    Id::uninit(internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id crosses the group as u64s and must arrive byte for byte.
    #[test]
    fn the_unique_id_survives_the_trip_through_u64s() {
        let mut internal = [0 as std::ffi::c_char; 128];
        for (i, c) in internal.iter_mut().enumerate() {
            *c = (i as u8).wrapping_mul(37).wrapping_add(200) as std::ffi::c_char;
        }
        let id = Id::uninit(internal);
        let back = id_from_words(&id_words(&id));
        assert_eq!(back.internal(), id.internal());
    }
}
