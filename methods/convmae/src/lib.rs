//! ConvMAE / MCMAE (Alpha-VL/ConvMAE, numerics §3): a hybrid conv-transformer encoder whose two
//! convolution stages see the mask through masked depthwise convolutions, with multi-scale
//! fusion of the stage outputs; MAE's decoder, target and loss.
pub mod cblock;
pub mod model;
pub mod presets;

use pixmim_core::engine::{run_job, Job, JobOutput};
use pixmim_core::interop::OfficialLayout;
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
    fn activation_floats_per_image(
        &self,
        model: &toml::Table,
        visible: usize,
    ) -> Result<Option<f64>> {
        Ok(Some(
            ConvMaeConfig::from_table(model)?.activation_floats_per_image(visible),
        ))
    }
    /// `models_convmae.py`: the stage output convolutions are bare `nn.Conv2d`s, and the conv
    /// blocks' 1x1 convolutions (`conv1`, `conv2`, `mlp.fc1`, `mlp.fc2` of `blocks1`/`blocks2`)
    /// are Linear layers over channels here (cblock.rs says why).
    fn official_layout(&self) -> OfficialLayout {
        OfficialLayout {
            renames: &[
                ("stage1_output_decode.proj.", "stage1_output_decode."),
                ("stage2_output_decode.proj.", "stage2_output_decode."),
            ],
            conv1x1: |k| {
                (k.starts_with("blocks1.") || k.starts_with("blocks2."))
                    && [
                        ".conv1.weight",
                        ".conv2.weight",
                        ".mlp.fc1.weight",
                        ".mlp.fc2.weight",
                    ]
                    .iter()
                    .any(|s| k.ends_with(s))
            },
        }
    }
}

pixmim_core::inventory::submit! { MethodRegistration(&ConvMaeMethod) }
