//! Low-pass target cost per 224x224 image (3 channels): pruned rustfft, the naive full 2-D
//! transform, and the DFT-as-matmul device path on the CPU backends.
use std::time::Instant;

use burn::prelude::*;
use pixmim_core::device::DeviceSpec;
use pixmim_plugin_pixmim::{LowPassFilter, LowPassOnDevice};

fn main() {
    let (h, w, r) = (224, 224, 40.0);
    let f = LowPassFilter::new(h, w, r);
    let u: Vec<f32> = (0..h * w)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let mut out = vec![0.0; h * w];
    let reps = 60;
    for (name, naive) in [
        ("pruned rustfft (host)", false),
        ("full 2-D rustfft (host)", true),
    ] {
        let t = Instant::now();
        for _ in 0..reps * 3 {
            if naive {
                f.apply_naive(&u, &mut out)
            } else {
                f.apply(&u, &mut out)
            }
        }
        println!(
            "{name:34} {:.3} ms/image (1 thread)",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    }
    for spec in [DeviceSpec::NdArray, DeviceSpec::Flex] {
        let dev = spec.device().unwrap();
        let d = LowPassOnDevice::<pixmim_core::RunBackend>::new(&f, &dev);
        let x = Tensor::<pixmim_core::RunBackend, 4>::random(
            [64, 3, h, w],
            burn::tensor::Distribution::Default,
            &dev,
        );
        let _ = d.target(x.clone()).into_data();
        let t = Instant::now();
        let _ = d.target(x).into_data();
        println!(
            "{:34} {:.3} ms/image (batch 64)",
            format!("DFT matmuls on {spec:?}"),
            t.elapsed().as_secs_f64() * 1e3 / 64.0
        );
    }
}
