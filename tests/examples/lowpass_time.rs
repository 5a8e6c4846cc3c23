//! Low-pass target cost per 224x224 image (3 channels): pruned rustfft, the naive full 2-D
//! transform, and the DFT-as-matmul device path on the CPU backends.
use std::time::Instant;

use burn::prelude::*;
use pixmim::device::DeviceSpec;
use pixmim::plugin_pixmim::{LowPassFilter, LowPassOnDevice};

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
    // The target generator as the data workers run it: a batch, parallel over all cores.
    use pixmim::traits::{ImageBatch, TargetGenerator};
    let threads = rayon::current_num_threads();
    for (size, batch) in [(224usize, 64usize), (32, 16)] {
        let t = pixmim::plugin_pixmim::FrequencyTarget::new(
            size,
            size,
            None,
            pixmim::plugin_pixmim::Band::Low,
        )
        .unwrap();
        let x = ImageBatch {
            batch,
            channels: 3,
            height: size,
            width: size,
            data: (0..batch * 3 * size * size)
                .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                .collect(),
        };
        let _ = t.generate(&x);
        let reps = if size == 224 { 5 } else { 50 };
        let t0 = Instant::now();
        for _ in 0..reps {
            let _ = t.generate(&x);
        }
        let per_batch = t0.elapsed().as_secs_f64() / reps as f64;
        println!(
            "FrequencyTarget {size}x{size}, batch {batch}, {threads} threads: {:.1} img/s ({:.3} ms per batch)",
            batch as f64 / per_batch,
            per_batch * 1e3
        );
    }
    for spec in [DeviceSpec::NdArray, DeviceSpec::Flex] {
        let dev = spec.device().unwrap();
        let d = LowPassOnDevice::<pixmim::RunBackend>::new(&f, &dev);
        let x = Tensor::<pixmim::RunBackend, 4>::random(
            [64, 3, h, w],
            burn::tensor::Distribution::Default,
            &dev,
        );
        let _ = d
            .target(x.clone(), pixmim::plugin_pixmim::Band::Low)
            .into_data();
        let t = Instant::now();
        let _ = d.target(x, pixmim::plugin_pixmim::Band::Low).into_data();
        println!(
            "{:34} {:.3} ms/image (batch 64)",
            format!("DFT matmuls on {spec:?}"),
            t.elapsed().as_secs_f64() * 1e3 / 64.0
        );
    }
}
