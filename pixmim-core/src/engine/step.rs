//! The training step, written once: target -> forward -> masked loss -> backward, the
//! gradients accumulated (over `train.accum_iter` batches and over devices) until
//! [`Step::update`] hands them to AdamW. Training, `pixmim bench` and data parallelism all
//! run it; one device is the data-parallel path with one shard, and several processes
//! ([`crate::distributed`]) run it each on their rows of the batch, summing over the group.
use std::sync::Arc;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::DispatchDevice;

use crate::distributed::{GradientSync, HostSync, ProcessGroup};
use crate::engine::data_parallel::{multi_gradients, run_shards};
use crate::error::{Error, Result};
use crate::mask::MaskBatch;
use crate::optim::AdamW;
use crate::target::TargetParams;
use crate::traits::{Autoencoder, ImageBatch, TargetGenerator};
use crate::RunBackend;

type B = RunBackend;

/// One batch on the host (this process's rows of it when several train together): the
/// images, the target the data workers made (None when the target is made on the device or is
/// the input), the masks, and which iteration it is (for the messages of a process group).
pub struct StepInputs<'a> {
    pub iteration: usize,
    pub images: &'a ImageBatch,
    pub target: Option<&'a ImageBatch>,
    pub mask: &'a MaskBatch,
}

impl StepInputs<'_> {
    fn rows(&self, start: usize, n: usize) -> (ImageBatch, Option<ImageBatch>, MaskBatch) {
        (
            self.images.rows(start, n),
            self.target.map(|t| t.rows(start, n)),
            self.mask.rows(start, n),
        )
    }
}

/// Called on each shard's thread after its forward pass, before backward frees the
/// activations (the bench reads a GPU's memory pools there): `(shard, device)`.
pub type ForwardProbe = Arc<dyn Fn(usize, &DispatchDevice) + Send + Sync>;

/// The step of a run on `devices`, holding the gradients accumulated since the last update.
pub struct Step<M> {
    devices: Vec<DispatchDevice>,
    /// `train.accum_iter`: each batch's loss is scaled by 1/accum before backward, so the
    /// accumulated gradient is the mean over the accumulated batches.
    accum: usize,
    accumulators: Vec<GradientsAccumulator<M>>,
    /// The same for a trainable target's parameters.
    target_accumulators: Vec<GradientsAccumulator<TargetParams<B>>>,
    probe: Option<ForwardProbe>,
    /// The processes training this model with this one, if any: losses and gradients are
    /// summed over them.
    group: Option<Arc<dyn ProcessGroup>>,
    /// What sums the gradients over the group (the group itself unless
    /// [`Step::with_gradient_sync`] says otherwise).
    sync: Option<Arc<dyn GradientSync>>,
    /// The iteration of the last batch accumulated (for the group's messages).
    iteration: usize,
}

impl<M> Step<M>
where
    M: Autoencoder<B> + AutodiffModule<B> + 'static,
{
    pub fn new(devices: Vec<DispatchDevice>, accum: usize) -> Self {
        let accumulators = devices
            .iter()
            .map(|_| GradientsAccumulator::new())
            .collect();
        let target_accumulators = devices
            .iter()
            .map(|_| GradientsAccumulator::new())
            .collect();
        Self {
            devices,
            accum: accum.max(1),
            accumulators,
            target_accumulators,
            probe: None,
            group: None,
            sync: None,
            iteration: 0,
        }
    }

    /// Train with `group`'s other processes: each holds its share of every batch
    /// ([`crate::data::loader::BatchRows`]) and the same number of devices.
    pub fn with_group(mut self, group: Option<Arc<dyn ProcessGroup>>) -> Self {
        self.sync = group
            .clone()
            .map(|g| Arc::new(HostSync(g)) as Arc<dyn GradientSync>);
        self.group = group;
        self
    }

    /// Sum the gradients with `sync` (NCCL, say) rather than the group's own sum.
    pub fn with_gradient_sync(mut self, sync: Option<Arc<dyn GradientSync>>) -> Self {
        if sync.is_some() {
            self.sync = sync;
        }
        self
    }

    /// Shards of each batch over every process: this process's devices times the processes.
    fn shards(&self) -> usize {
        self.devices.len() * self.group.as_ref().map_or(1, |g| g.world())
    }

    pub fn devices(&self) -> &[DispatchDevice] {
        &self.devices
    }

    pub fn set_forward_probe(&mut self, probe: Option<ForwardProbe>) {
        self.probe = probe;
    }

    /// Forward and backward of `inputs`, split evenly over the devices (shard d, rows
    /// [d*B/n, (d+1)*B/n), on device d, each on its own thread), adding the gradients to the
    /// accumulated ones. Returns the batch's mean loss, read once every shard's work is queued.
    ///
    /// Each shard's loss is scaled by 1/shards (devices times processes), so the shards'
    /// gradients sum to the batch's (every sample masks the same number of patches, so the mean
    /// of the shard means is the batch mean); with a group, the returned loss is summed over
    /// it, so every process reports (and checks) the whole batch's loss. Each shard runs a replica made with `fork`, which gives it fresh leaf
    /// parameters and so its own autodiff graph, with the model's parameter ids; so does the
    /// target's (`target`, empty for a fixed target), whose gradient comes from the same loss.
    pub fn accumulate(
        &mut self,
        model: &M,
        target: &TargetParams<B>,
        inputs: &StepInputs,
        target_gen: &dyn TargetGenerator,
    ) -> Result<f64> {
        let n = self.devices.len();
        let batch = inputs.images.batch;
        if n == 0 || !batch.is_multiple_of(n) {
            return Err(Error::config(
                "train.batch_size",
                format!("{batch} does not split evenly over {n} devices"),
            ));
        }
        let per = batch / n;
        let shards = self.shards();
        self.iteration = inputs.iteration;
        let (accum, probe) = (self.accum, self.probe.clone());
        let replicas = self
            .devices
            .iter()
            .map(|dev| (model.clone().fork(dev), target.clone().fork(dev)))
            .collect();
        let shards = run_shards(&self.devices, replicas, |d, dev, (replica, params)| {
            let (images, host_target, mask) = inputs.rows(d * per, per);
            let images = images.to_tensor::<B>(dev);
            let target = crate::target::target_tensor(
                target_gen,
                host_target.as_ref(),
                &params,
                images.clone(),
            );
            let mask = mask.to_tensors::<B>(dev);
            let pred = replica.forward(images, &mask);
            if let Some(probe) = &probe {
                probe(d, dev);
            }
            let loss = replica.loss(pred, target, mask.mask.clone());
            // Division by one is exact but would add a node to the graph.
            let loss = if shards > 1 {
                loss / shards as f64
            } else {
                loss
            };
            let scaled = if accum > 1 {
                loss.clone() / accum as f64
            } else {
                loss.clone()
            };
            let mut all = scaled.backward();
            let grads = GradientsParams::from_module(&mut all, &replica);
            let target_grads = GradientsParams::from_module(&mut all, &params);
            ((replica, grads), (params, target_grads), loss)
        })?;
        let mut losses = Vec::with_capacity(n);
        let accumulators = self.accumulators.iter_mut();
        let targets = self.target_accumulators.iter_mut();
        for (((replica, grads), (params, target_grads), loss), (acc, target_acc)) in
            shards.into_iter().zip(accumulators.zip(targets))
        {
            acc.accumulate(&replica, grads);
            target_acc.accumulate(&params, target_grads);
            losses.push(loss);
        }
        let mut loss = [losses.into_iter().map(|l| l.into_scalar() as f64).sum()];
        if let Some(group) = &self.group {
            let what = format!("the loss of iteration {}", inputs.iteration);
            group.all_reduce_f64(&mut loss, &what)?;
        }
        Ok(loss[0])
    }

    /// One AdamW update of `model` and of the target's parameters (added to `optim` with
    /// [`AdamW::add_undecayed`]) with the gradients accumulated since the last one (summed
    /// over the process group first, when there is one).
    pub fn update(
        &mut self,
        (model, target): (M, TargetParams<B>),
        optim: &mut AdamW<B>,
        lr: f64,
    ) -> Result<(M, TargetParams<B>)> {
        let mut grads: Vec<GradientsParams> =
            self.accumulators.iter_mut().map(|a| a.grads()).collect();
        let target_grads: Vec<GradientsParams> = self
            .target_accumulators
            .iter_mut()
            .map(|a| a.grads())
            .collect();
        if let Some(sync) = &self.sync {
            use crate::distributed::gradients::all_reduce;
            let it = self.iteration;
            let what = format!("the gradients of iteration {it}");
            let summed = all_reduce(sync.as_ref(), &model, grads, &what)?;
            let model = optim.step(lr, model, summed);
            let target = match target.theta {
                Some(_) => {
                    let what = format!("the target's gradients of iteration {it}");
                    let summed = all_reduce(sync.as_ref(), &target, target_grads, &what)?;
                    optim.step_unclipped(lr, target, multi_gradients([summed], &self.devices))
                }
                None => target,
            };
            return Ok((model, target));
        }
        let model = if grads.len() == 1 {
            optim.step(lr, model, grads.pop().expect("one device"))
        } else {
            optim.step_multi(lr, model, multi_gradients(grads, &self.devices))
        };
        let target = match target.theta {
            Some(_) => {
                optim.step_unclipped(lr, target, multi_gradients(target_grads, &self.devices))
            }
            None => target,
        };
        Ok((model, target))
    }

    /// Wait until every device has finished the work queued so far (GPU backends queue it).
    pub fn sync(&self) -> Result<()> {
        for d in &self.devices {
            <B as Backend>::sync(d)
                .map_err(|e| Error::Device(format!("waiting for the step: {e:?}")))?;
        }
        Ok(())
    }
}
