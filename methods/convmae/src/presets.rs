//! ConvMAE recipes as typed code (numerics §3.1): MAE's official recipe with the ConvMAE-Base
//! network and 3072 images per step (PRETRAIN.md: 24 GPUs x 128), 1600 epochs.
use pixmim_core::config::TrainConfig;
use pixmim_core::recipe::Recipe;
use toml::Table;

use crate::ConvMaeConfig;

pub const NAMES: &[&str] = &["base", "tiny"];

/// A preset by name.
pub fn recipe(name: &str) -> Option<Recipe<ConvMaeConfig>> {
    Some(match name {
        "base" => {
            let mae = pixmim_mae::presets::recipe("base")?;
            let train = TrainConfig {
                batch_size: 128,
                accum_iter: 24,
                epochs: Some(1600.0),
                ..mae.train.clone()
            };
            Recipe { train, ..mae }.with_model(ConvMaeConfig::base())
        }
        "tiny" => pixmim_mae::presets::recipe("tiny")?.with_model(ConvMaeConfig::tiny()),
        _ => return None,
    })
}

/// A preset as the run config's first layer.
pub fn preset(name: &str) -> Option<Table> {
    recipe(name).map(|r| r.to_table())
}
