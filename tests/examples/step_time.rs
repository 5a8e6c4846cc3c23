//! Time a tiny-MAE training step on each CPU backend, directly and through Dispatch.
use std::time::Instant;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use pixmim::config::{NoDecayRule, OptimConfig};
use pixmim::masking::RandomMasking;
use pixmim::method_def::ModelConfig;
use pixmim::optim::AdamW;
use pixmim::traits::{Autoencoder, Corruption};
use rand::SeedableRng;

fn time<B: AutodiffBackend>(name: &str, dev: B::Device, batch: usize) {
    let cfg = pixmim::mae::presets::recipe("tiny").unwrap().model;
    let mut model = cfg.init::<B>(&dev, 0);
    let ocfg = OptimConfig {
        blr: 1e-3,
        lr: None,
        weight_decay: 0.05,
        betas: [0.9, 0.95],
        eps: 1e-8,
        no_decay: NoDecayRule::Official,
        clip_grad: None,
    };
    let mut opt = AdamW::<B>::new(&ocfg, &model);
    let masking = RandomMasking::new(0.75, 64).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let imgs = Tensor::<B, 4>::random(
        [batch, 3, 32, 32],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &dev,
    );
    let mut times = vec![];
    for i in 0..8 {
        let t = Instant::now();
        let m = masking.sample(batch, &mut rng).to_tensors::<B>(&dev);
        let pred = model.forward(imgs.clone(), &m);
        let loss = model.loss(pred, imgs.clone(), m.mask.clone());
        let g = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(1e-4, model, g);
        let _ = model.cls_token.val().into_data();
        if i >= 2 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{name:28} batch {batch}: median {:.3} s/step",
        times[times.len() / 2]
    );
}

fn main() {
    let batch: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    time::<Autodiff<Flex>>("Autodiff<Flex>", Default::default(), batch);
    time::<Autodiff<NdArray>>("Autodiff<NdArray>", Default::default(), batch);
    time::<pixmim::RunBackend>(
        "Dispatch(Autodiff(Flex))",
        burn::DispatchDevice::autodiff(burn::DispatchDevice::Flex(Default::default())),
        batch,
    );
    time::<pixmim::RunBackend>(
        "Dispatch(Autodiff(NdArray))",
        burn::DispatchDevice::autodiff(burn::DispatchDevice::NdArray(Default::default())),
        batch,
    );
}
