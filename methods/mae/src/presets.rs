//! MAE recipes (spec §1, §11.4). `base` is the official ViT-B/16 pretraining recipe.
use toml::Table;

pub const NAMES: &[&str] = &["base", "large", "huge", "mm", "tiny"];

/// The official recipe around a model table (spec §1.3): RRC, random 75% masking, raw-pixel
/// norm_pix target, AdamW blr 1.5e-4 (0.9, 0.95) wd 0.05, 40 warm-up epochs, batch 4096.
fn recipe(model: &str, train: &str) -> Table {
    let text = format!(
        r#"
seed = 0

[model]
{model}

[augmentation]
name = "rrc"
scale = [0.2, 1.0]
ratio = [0.75, 1.3333333333333333]
interpolation = "bicubic"
hflip = 0.5

[masking]
name = "random"
ratio = 0.75

[target]
name = "pixel"

[optim]
blr = 1.5e-4
weight_decay = 0.05
betas = [0.9, 0.95]
eps = 1e-8
no_decay = "official"

[schedule]
kind = "official"
warmup_epochs = 40.0
min_lr = 0.0

[train]
{train}
"#
    );
    text.parse().expect("preset TOML is valid")
}

const BASE_MODEL: &str = r#"img_size = 224
patch_size = 16
embed_dim = 768
depth = 12
num_heads = 12
decoder_embed_dim = 512
decoder_depth = 8
decoder_num_heads = 16
mlp_ratio = 4.0
norm_pix = true
pos_embed = "official""#;

/// 4096 images per step as 256 x 16 accumulation on one GPU (spec §9: keep 4096 via accum_iter).
const OFFICIAL_TRAIN: &str = r#"batch_size = 256
accum_iter = 16
epochs = 1600.0
checkpoint_every = 5000
keep_checkpoints = 3
log_every = 50"#;

pub fn preset(name: &str) -> Option<Table> {
    Some(match name {
        "base" => recipe(BASE_MODEL, OFFICIAL_TRAIN),
        "large" => recipe(
            &BASE_MODEL
                .replace("embed_dim = 768", "embed_dim = 1024")
                .replace("depth = 12", "depth = 24")
                .replace("num_heads = 12", "num_heads = 16"),
            &OFFICIAL_TRAIN.replace("1600.0", "800.0"),
        ),
        "huge" => recipe(
            &BASE_MODEL
                .replace("patch_size = 16", "patch_size = 14")
                .replace("embed_dim = 768", "embed_dim = 1280")
                .replace("depth = 12", "depth = 32")
                .replace("num_heads = 12", "num_heads = 16"),
            OFFICIAL_TRAIN,
        ),
        // mmselfsup's MAE (the PixMIM baseline, spec §1.4): row-first pos-embed, mm no-decay
        // keys, mmengine LinearLR(1e-4) + cosine, 300 epochs, 8 x 512.
        // Not reproduced: mm's N(0, 1e-6) FFN bias init (Xavier weights, zero bias here).
        "mm" => {
            let mut t = recipe(
                &BASE_MODEL.replace("\"official\"", "\"mm\""),
                &OFFICIAL_TRAIN
                    .replace("batch_size = 256", "batch_size = 512")
                    .replace("accum_iter = 16", "accum_iter = 8")
                    .replace("1600.0", "300.0"),
            );
            pixmim_core::config::set_dotted(&mut t, "optim.no_decay=\"mm\"").ok()?;
            pixmim_core::config::set_dotted(&mut t, "schedule.kind=\"mmengine\"").ok()?;
            pixmim_core::config::set_dotted(&mut t, "schedule.start_factor=1e-4").ok()?;
            pixmim_core::config::set_dotted(&mut t, "seed=0").ok()?;
            t
        }
        // CPU smoke runs and tests: 32 px, patch 4, 192 x 4 encoder, 128 x 2 decoder.
        // blr 0.024 gives lr 1.5e-3 at batch 16 (a tiny model on a dozen images needs it).
        "tiny" => {
            let mut t = recipe(
                r#"img_size = 32
patch_size = 4
embed_dim = 192
depth = 4
num_heads = 3
decoder_embed_dim = 128
decoder_depth = 2
decoder_num_heads = 4
mlp_ratio = 4.0
norm_pix = true
pos_embed = "official""#,
                r#"batch_size = 16
accum_iter = 1
steps = 200
checkpoint_every = 50
keep_checkpoints = 3
log_every = 10"#,
            );
            pixmim_core::config::set_dotted(&mut t, "optim.blr=0.024").ok()?;
            pixmim_core::config::set_dotted(&mut t, "schedule.warmup_epochs=10.0").ok()?;
            t
        }
        _ => return None,
    })
}
