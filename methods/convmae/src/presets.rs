//! ConvMAE recipes as typed code (numerics §3.1): MAE's official recipe with the ConvMAE-Base
//! network and 3072 images per step (PRETRAIN.md: 24 GPUs x 128), 1600 epochs.
use pixmim_core::config::TrainConfig;
use pixmim_core::recipe::Recipe;
use pixmim_core::registry::PresetDef;

use crate::ConvMaeConfig;

/// The presets, the default first, with the (trainable, frozen) parameters each builds:
/// base is the official ConvMAE-Base count (numerics §3.2); tiny pins pixmim's own CPU model.
pub const PRESETS: &[PresetDef] = &[
    PresetDef {
        name: "base",
        trainable: 114_790_528,
        frozen: 250_880,
    },
    PresetDef {
        name: "tiny",
        trainable: 431_552,
        frozen: 2_560,
    },
];

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
