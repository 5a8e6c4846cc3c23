//! LSMAE, "Exploring Long-Sequence Masked Autoencoders" (facebookresearch/long_seq_mae, numerics §5):
//! MAE's network at 448 px (784 patches) with a 384-wide decoder, and the mask decoupled from
//! the patch: one decision per 2x2-patch unit, drawn in the data workers.
pub mod masking;
pub mod presets;

use pixmim_core::engine::{run_job, Job, JobOutput};
use pixmim_core::registry::{Geometry, Method, MethodRegistration};
use pixmim_core::Result;
use pixmim_mae::MaeConfig;

pub use masking::UnitMasking;

pub struct LsMaeMethod;

impl Method for LsMaeMethod {
    fn name(&self) -> &'static str {
        "lsmae"
    }
    fn description(&self) -> &'static str {
        "Long-sequence MAE: 448 px, 2x2-patch mask units, 384-wide decoder (Hu et al. 2022)"
    }
    fn presets(&self) -> &'static [&'static str] {
        presets::NAMES
    }
    fn preset(&self, name: &str) -> Option<toml::Table> {
        presets::preset(name)
    }
    /// The model is MAE's (numerics §5.3); masking is what differs.
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

pixmim_core::inventory::submit! { MethodRegistration(&LsMaeMethod) }
