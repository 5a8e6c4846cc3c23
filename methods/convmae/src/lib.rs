//! ConvMAE / MCMAE (Alpha-VL/ConvMAE, spec §3): a hybrid conv-transformer encoder whose two
//! convolution stages see the mask through masked depthwise convolutions, with multi-scale
//! fusion of the stage outputs; MAE's decoder, target and loss.
pub mod cblock;
pub mod model;
pub mod presets;

use pixmim_core::engine::{run_job, Job, JobOutput};
use pixmim_core::registry::{Geometry, Method, MethodRegistration};
use pixmim_core::Result;

pub use model::{ConvMae, ConvMaeConfig};

pub struct ConvMaeMethod;

impl Method for ConvMaeMethod {
    fn name(&self) -> &'static str {
        "convmae"
    }
    fn description(&self) -> &'static str {
        "ConvMAE: conv 256x2, conv 384x2, ViT 768x11, block-wise masking, multi-scale fusion (Gao et al. 2022)"
    }
    fn presets(&self) -> &'static [&'static str] {
        presets::NAMES
    }
    fn preset(&self, name: &str) -> Option<toml::Table> {
        presets::preset(name)
    }
    fn geometry(&self, model: &toml::Table) -> Result<Geometry> {
        ConvMaeConfig::from_table(model)?.geometry()
    }
    fn run(&self, job: Job<'_>) -> Result<JobOutput> {
        let cfg = ConvMaeConfig::from_table(&job.composed().model_table())?;
        run_job(job, move |device, seed| cfg.init(device, seed))
    }
}

pixmim_core::inventory::submit! { MethodRegistration(&ConvMaeMethod) }
