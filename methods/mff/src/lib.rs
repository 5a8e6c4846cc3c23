//! MFF, "Improving Pixel-based MIM by Reducing Wasted Modeling Capability" (mmpretrain `MFF`,
//! numerics §4): MAE whose latent is a learned softmax fusion of shallow and deep encoder layers.
pub mod model;
pub mod presets;

use pixmim_core::engine::{run_job, Job, JobOutput};
use pixmim_core::interop::OfficialLayout;
use pixmim_core::registry::{Geometry, Method, MethodRegistration};
use pixmim_core::Result;

// The SRC augmentation MFF trains with is registered by the PixMIM plugin crate.
use pixmim_plugin_pixmim as _;

pub use model::{Mff, MffConfig};

pub struct MffMethod;

impl Method for MffMethod {
    fn name(&self) -> &'static str {
        "mff"
    }
    fn description(&self) -> &'static str {
        "Multi-level feature fusion MAE: softmax fusion of layers {0,2,4,6,8,11} (Liu et al. 2023; mmpretrain)"
    }
    fn presets(&self) -> &'static [&'static str] {
        presets::NAMES
    }
    fn preset(&self, name: &str) -> Option<toml::Table> {
        presets::preset(name)
    }
    fn geometry(&self, model: &toml::Table) -> Result<Geometry> {
        MffConfig::from_table(model)?.mae.geometry()
    }
    fn run(&self, job: Job<'_>) -> Result<JobOutput> {
        let cfg = MffConfig::from_table(&job.composed().model_table())?;
        run_job(job, move |device, seed| cfg.init(device, seed))
    }
    /// MAE's, plus each fused layer's projection and its weighted copy.
    fn activation_floats_per_image(
        &self,
        model: &toml::Table,
        visible: usize,
    ) -> Result<Option<f64>> {
        let c = MffConfig::from_table(model)?;
        let fused = 2.0 * (c.out_indices.len() * (visible + 1) * c.mae.embed_dim) as f64;
        Ok(Some(c.mae.activation_floats_per_image(visible) + fused))
    }
    /// mmpretrain's `MFFViT` is MAE's backbone with `proj_layers` / `proj_weights` beside its
    /// blocks; pixmim nests the MAE model as the `mae` field.
    fn official_layout(&self) -> OfficialLayout {
        OfficialLayout {
            renames: &[("mae.", "")],
            conv1x1: |_| false,
        }
    }
}

pixmim_core::inventory::submit! { MethodRegistration(&MffMethod) }
