//! MAE (He et al., 2022) as the official `facebookresearch/mae` code does it (numerics §1).
//!
//! `model.rs` is the network, `presets.rs` the recipes; this file registers the method.
pub mod model;
pub mod presets;

use pixmim_core::engine::{run_job, Job, JobOutput};
use pixmim_core::registry::{Geometry, Method, MethodRegistration};
use pixmim_core::Result;

pub use model::{Mae, MaeConfig};

pub struct MaeMethod;

impl Method for MaeMethod {
    fn name(&self) -> &'static str {
        "mae"
    }
    fn description(&self) -> &'static str {
        "Masked Autoencoder, ViT encoder + light decoder (He et al. 2022; facebookresearch/mae)"
    }
    fn presets(&self) -> &'static [&'static str] {
        presets::NAMES
    }
    fn preset(&self, name: &str) -> Option<toml::Table> {
        presets::preset(name)
    }
    fn geometry(&self, model: &toml::Table) -> Result<Geometry> {
        MaeConfig::from_table(model)?.geometry()
    }
    fn run(&self, job: Job<'_>) -> Result<JobOutput> {
        let cfg = MaeConfig::from_table(&job.composed().model_table())?;
        run_job(job, move |device, seed| cfg.init(device, seed))
    }
    fn activation_floats_per_image(
        &self,
        model: &toml::Table,
        visible: usize,
    ) -> Result<Option<f64>> {
        Ok(Some(
            MaeConfig::from_table(model)?.activation_floats_per_image(visible),
        ))
    }
}

pixmim_core::inventory::submit! { MethodRegistration(&MaeMethod) }
