//! MFF recipes as typed code (numerics §4.2): mmpretrain's MAE 300e recipe (row-first pos-embed,
//! mm no-decay keys, LinearLR(1e-4) + cosine, 8 x 512, seed 2) with PixMIM's Simple Resized
//! Crop.
use pixmim_core::augment::SrcParams;
use pixmim_core::config::NoDecayRule;
use pixmim_core::recipe::{Component, Recipe};
use pixmim_core::registry::PresetDef;

use crate::MffConfig;

/// The presets, the default first, with the (trainable, frozen) parameters each builds:
/// base is mmpretrain's MFF ViT-B count (numerics §4.1): MAE-B plus the fusion's projections
/// and weights; tiny pins pixmim's own CPU model.
pub const PRESETS: &[PresetDef] = &[
    PresetDef {
        name: "base",
        trainable: 114_608_646,
        frozen: 252_160,
    },
    PresetDef {
        name: "tiny",
        trainable: 2_291_379,
        frozen: 20_800,
    },
];

/// MAE's `mae_preset` recipe around an MFF fusing blocks `out_indices`, trained with SRC.
fn mff(mae_preset: &str, out_indices: Vec<usize>) -> Option<Recipe<MffConfig>> {
    let mae = pixmim_mae::presets::recipe(mae_preset)?;
    let model = MffConfig {
        out_indices,
        mae: mae.model.clone(),
    };
    let mut r = mae.with_model(model);
    r.seed = 2;
    r.augmentation = Component::new("src", &SrcParams::pixmim());
    Some(r)
}

/// A preset by name.
pub fn recipe(name: &str) -> Option<Recipe<MffConfig>> {
    match name {
        "base" => mff("mm", vec![0, 2, 4, 6, 8, 11]),
        // CPU runs: MAE tiny (4 blocks) fusing blocks 0, 1 and 3.
        "tiny" => {
            let mut r = mff("tiny", vec![0, 1, 3])?;
            r.optim.no_decay = NoDecayRule::Mm;
            Some(r)
        }
        _ => None,
    }
}
