//! LSMAE recipes as typed code (numerics §5.4): the MAE recipe at 448 px with 2x2-patch mask
//! units and the `dec384d12h8b` decoder.
use pixmim_core::config::TrainConfig;
use pixmim_core::recipe::{Component, Recipe};
use pixmim_core::registry::PresetDef;
use pixmim_mae::MaeConfig;

use pixmim_core::masking::UnitMaskingParams;

/// The presets, the default first, with the (trainable, frozen) parameters each builds:
/// base and large are the official long-sequence models' counts at 448 px (numerics §5.3);
/// tiny pins pixmim's own CPU model.
pub const PRESETS: &[PresetDef] = &[
    PresetDef {
        name: "base",
        trainable: 100_435_200,
        frozen: 904_320,
    },
    PresetDef {
        name: "large",
        trainable: 329_239_296,
        frozen: 1_205_760,
    },
    PresetDef {
        name: "tiny",
        trainable: 2_217_264,
        frozen: 82_240,
    },
];

/// MAE's recipe around `model`, with one mask decision per 2x2 patches.
fn long_sequence(model: MaeConfig, train: TrainConfig) -> Recipe<MaeConfig> {
    let mut r = pixmim_mae::presets::official(model, train);
    r.masking = Component::new(
        "units",
        &UnitMaskingParams {
            ratio: 0.75,
            unit: 2,
        },
    );
    r
}

/// A preset by name.
pub fn recipe(name: &str) -> Option<Recipe<MaeConfig>> {
    let official_train = pixmim_mae::presets::official_train;
    Some(match name {
        // ViT-B/16 at 448 (784 patches, 196 visible), decoder 384 wide, 12 heads, 8 blocks;
        // effective batch 4096 (32 per GPU x 128 in the release; here 64 x 64 accumulation),
        // 800 epochs.
        "base" => long_sequence(
            MaeConfig {
                img_size: 448,
                decoder_embed_dim: 384,
                decoder_num_heads: 12,
                decoder_depth: 8,
                ..MaeConfig::base()
            },
            TrainConfig {
                batch_size: 64,
                accum_iter: 64,
                ..official_train(800.0)
            },
        ),
        // ViT-L/16 at 448 with the dec512d16h8b decoder.
        "large" => long_sequence(
            MaeConfig {
                img_size: 448,
                ..MaeConfig::large()
            },
            TrainConfig {
                batch_size: 32,
                accum_iter: 128,
                ..official_train(800.0)
            },
        ),
        // CPU runs: MAE tiny at 64 px (16x16 patches of 4 px) with 2x2 units.
        "tiny" => {
            let mae = pixmim_mae::presets::recipe("tiny")?;
            let mut r = long_sequence(
                MaeConfig {
                    img_size: 64,
                    decoder_num_heads: 4,
                    ..mae.model
                },
                TrainConfig {
                    batch_size: 8,
                    ..mae.train
                },
            );
            r.optim = mae.optim;
            r.schedule = mae.schedule;
            r
        }
        _ => return None,
    })
}
