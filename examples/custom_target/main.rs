//! pixmim used as a library, outside its own method and plugin crates: a target generator of
//! one's own (`blur_target.rs`: the decoder predicts a Gaussian-blurred image), registered by
//! name so that a run selects it with `--set target.name="blur"`, unit-tested on the CPU
//! without a model (`cargo test --release --workspace` runs its tests), and trained here
//! through the library API: MAE's tiny preset on the sample photos.
//!
//! ```text
//! cargo run --release -p pixmim-cli --example custom_target -- [STEPS] [OUT]
//! ```
//!
//! It is an example of the CLI's package so that it builds with the CLI's dependencies and
//! features: nothing of burn's compiles again after the README's main job.
mod blur_target;

use pixmim::device::DeviceSpec;
use pixmim::job::TrainOptions;
use pixmim::registry::{compose, Request};

fn main() -> pixmim::Result<()> {
    let mut args = std::env::args().skip(1);
    let steps: usize = args
        .next()
        .map_or(Ok(40), |s| s.parse())
        .map_err(|e| pixmim::Error::Usage(format!("STEPS must be a whole number: {e}")))?;
    let out = args
        .next()
        .unwrap_or_else(|| "runs/example-custom-target".to_string());
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/samples");
    let c = compose(&Request {
        method: "mae".into(),
        preset: Some("tiny".into()),
        sets: vec![
            "target.name=\"blur\"".into(),
            "target.sigma=1.5".into(),
            format!("train.steps={steps}"),
            format!("data.path={samples:?}"),
        ],
        ..Default::default()
    })?;
    println!("target: {}", c.parts.target.describe());
    let summary = c.train(&TrainOptions::new(&out, DeviceSpec::Flex))?;
    let first = summary.losses.first().copied().unwrap_or(f64::NAN);
    let last = summary.losses.last().copied().unwrap_or(f64::NAN);
    println!(
        "{} steps, loss {first:.4} -> {last:.4}, {:.0} img/s; run folder {}",
        summary.losses.len(),
        summary.images_per_second,
        summary.out.display()
    );
    Ok(())
}
