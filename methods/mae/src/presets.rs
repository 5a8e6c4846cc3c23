//! MAE recipes as typed code (numerics §1, §11.4). `base` is the official ViT-B/16 pretraining
//! recipe; the networks are [`MaeConfig::base`], [`MaeConfig::large`], ... in `model.rs`.
use pixmim_core::augment::RandomResizedCropParams;
use pixmim_core::config::{NoDecayRule, OptimConfig, ScheduleConfig, ScheduleKind, TrainConfig};
use pixmim_core::masking::RandomMaskingParams;
use pixmim_core::nn::PosEmbedOrientation;
use pixmim_core::recipe::{Component, Recipe};
use pixmim_core::registry::PresetDef;

use crate::MaeConfig;

/// The presets, the default first, with the (trainable, frozen) parameters each builds:
/// base, large and huge are the official ViT-B/L/H MAE models' counts (numerics §1.2; frozen:
/// the fixed sin-cos position embeddings); mm is base with mmselfsup's pos-embed orientation;
/// tiny pins pixmim's own CPU model so that it does not change unnoticed.
pub const PRESETS: &[PresetDef] = &[
    PresetDef {
        name: "base",
        trainable: 111_655_680,
        frozen: 252_160,
    },
    PresetDef {
        name: "large",
        trainable: 329_239_296,
        frozen: 302_592,
    },
    PresetDef {
        name: "huge",
        trainable: 656_613_964,
        frozen: 460_544,
    },
    PresetDef {
        name: "mm",
        trainable: 111_655_680,
        frozen: 252_160,
    },
    PresetDef {
        name: "tiny",
        trainable: 2_217_264,
        frozen: 20_800,
    },
];

/// The official recipe around `model` (numerics §1.3): RRC, random 75% masking, raw-pixel
/// norm_pix target, AdamW blr 1.5e-4 (0.9, 0.95) wd 0.05, 40 warm-up epochs.
pub fn official(model: MaeConfig, train: TrainConfig) -> Recipe<MaeConfig> {
    Recipe {
        seed: 0,
        model,
        augmentation: Component::new("rrc", &RandomResizedCropParams::official()),
        masking: Component::new("random", &RandomMaskingParams { ratio: 0.75 }),
        target: Component::named("pixel"),
        optim: OptimConfig {
            blr: 1.5e-4,
            lr: None,
            weight_decay: 0.05,
            betas: [0.9, 0.95],
            eps: 1e-8,
            no_decay: NoDecayRule::Official,
            clip_grad: None,
        },
        schedule: ScheduleConfig {
            kind: ScheduleKind::Official,
            warmup_epochs: 40.0,
            min_lr: 0.0,
            start_factor: 1e-4,
        },
        train,
    }
}

/// 4096 images per step as 256 x 16 accumulation on one GPU (numerics §9: keep 4096 via
/// accum_iter), for `epochs`.
pub fn official_train(epochs: f64) -> TrainConfig {
    TrainConfig {
        accum_iter: 16,
        epochs: Some(epochs),
        checkpoint_every: 5000,
        keep_checkpoints: 3,
        log_every: 50,
        ..TrainConfig::with_batch(256)
    }
}

/// A preset by name.
pub fn recipe(name: &str) -> Option<Recipe<MaeConfig>> {
    Some(match name {
        "base" => official(MaeConfig::base(), official_train(1600.0)),
        "large" => official(MaeConfig::large(), official_train(800.0)),
        "huge" => official(MaeConfig::huge(), official_train(1600.0)),
        // mmselfsup's MAE (the PixMIM baseline, numerics §1.4): row-first pos-embed, mm no-decay
        // keys, mmengine LinearLR(1e-4) + cosine, 300 epochs, 8 x 512.
        // Not reproduced: mm's N(0, 1e-6) FFN bias init (Xavier weights, zero bias here).
        "mm" => {
            let model = MaeConfig {
                pos_embed: PosEmbedOrientation::Mm,
                ..MaeConfig::base()
            };
            let mut r = official(
                model,
                TrainConfig {
                    batch_size: 512,
                    accum_iter: 8,
                    ..official_train(300.0)
                },
            );
            r.optim.no_decay = NoDecayRule::Mm;
            r.schedule.kind = ScheduleKind::Mmengine;
            r
        }
        // CPU smoke runs and tests. blr 0.024 gives lr 1.5e-3 at batch 16 (a tiny model on a
        // dozen images needs it).
        "tiny" => {
            let mut r = official(
                MaeConfig::tiny(),
                TrainConfig {
                    steps: Some(200),
                    checkpoint_every: 50,
                    keep_checkpoints: 3,
                    log_every: 10,
                    image_every: 50,
                    ..TrainConfig::with_batch(16)
                },
            );
            r.optim.blr = 0.024;
            r.schedule.warmup_epochs = 10.0;
            r
        }
        _ => return None,
    })
}
