//! Timing of one training step (target + forward + backward + AdamW) on synthetic images,
//! without the data pipeline: what `pixmim bench` reports per method and preset.
use std::sync::{Arc, Mutex};
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::DispatchDevice;
use rand::SeedableRng;

use crate::bench::median;
use crate::device::{device_memory, release_device_memory, DeviceMemory};
use crate::engine::step::{Step, StepInputs};
use crate::error::Result;
use crate::job::{StepBenchOptions, StepTiming};
use crate::registry::Composed;
use crate::target::TargetParams;
use crate::traits::Autoencoder;
use crate::RunBackend;

type B = RunBackend;

impl StepTiming {
    pub fn median_step_s(&self) -> f64 {
        median(&self.step_s)
    }
    pub fn median_target_s(&self) -> f64 {
        median(&self.target_s)
    }
    pub fn images_per_second(&self) -> f64 {
        self.batch as f64 / self.median_step_s()
    }
}

/// Time `opts.steps` training steps of the composed method on one fixed batch of
/// standard-normal images (a fresh mask each step). The target is made as in training:
/// on the host (timed as part of the step, as if the data workers had no spare core) or on
/// the device.
pub fn time_steps<M, F>(c: &Composed, opts: &StepBenchOptions, build: F) -> Result<StepTiming>
where
    M: Autoencoder<B> + AutodiffModule<B> + 'static,
    F: Fn(&DispatchDevice, u64) -> M,
{
    let (specs, devices) = super::training_devices(
        &opts.device,
        &opts.replicas,
        opts.batch,
        c.train.activation_checkpointing,
    )?;
    let device = devices[0].clone();
    for d in &devices {
        release_device_memory(d); // the previous configuration's pages
    }
    let mut model = super::model_for_training(c, &specs, &device, c.seed, &build)?;
    let mut target = TargetParams::new(c.parts.target.as_ref(), &device);
    let mut optim = super::optimiser(c, &model, &target);
    let (h, w) = c.geometry.image;
    let images = crate::bench::normal_images(opts.batch, (h, w), c.seed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(c.seed);
    let on_device = super::target_on_device(c.parts.target.as_ref(), &opts.device);
    let mut timing = StepTiming {
        batch: opts.batch,
        step_s: Vec::new(),
        target_s: Vec::new(),
        device_memory: None,
    };
    // One device's pools, read during the warm-up steps only: after the forward pass (the
    // activations backward will read) and after the step.
    let seen = Arc::new(Mutex::new(None::<DeviceMemory>));
    let sample = {
        let seen = Arc::clone(&seen);
        move |dev: &DispatchDevice| {
            if let Some(m) = device_memory(dev) {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                *seen = Some(seen.unwrap_or_default().max(m));
            }
        }
    };
    let one_device = devices.len() == 1;
    let mut step = Step::<M>::new(devices, 1);
    for i in 0..opts.warmup + opts.steps {
        let warm_up = i < opts.warmup && one_device;
        let probe = sample.clone();
        step.set_forward_probe(
            warm_up.then(|| Arc::new(move |_, dev: &DispatchDevice| probe(dev)) as _),
        );
        let t0 = Instant::now();
        let host = super::host_target(c.parts.target.as_ref(), &images, on_device);
        let target_s = t0.elapsed().as_secs_f64();
        let mask = c.parts.masking.sample(opts.batch, &mut rng);
        let inputs = StepInputs {
            iteration: i,
            images: &images,
            target: host.as_ref(),
            mask: &mask,
        };
        step.accumulate(&model, &target, &inputs, c.parts.target.as_ref())?;
        (model, target) = step.update((model, target), &mut optim, 1e-4)?;
        // GPU backends queue work; wait for the step to finish before stopping the clock.
        step.sync()?;
        if warm_up {
            sample(&device);
        }
        if i >= opts.warmup {
            timing.step_s.push(t0.elapsed().as_secs_f64());
            timing.target_s.push(target_s);
        }
    }
    timing.device_memory = *seen.lock().unwrap_or_else(|e| e.into_inner());
    Ok(timing)
}
