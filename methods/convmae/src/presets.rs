//! ConvMAE recipes (spec §3.1): MAE's official recipe with the ConvMAE-Base network and
//! 3072 images per step (PRETRAIN.md: 24 GPUs x 128), 1600 epochs.
use toml::Table;

pub const NAMES: &[&str] = &["base", "tiny"];

fn convmae(mae_preset: &str, model: &str, train: &[&str]) -> Option<Table> {
    let mut t = pixmim_mae::presets::preset(mae_preset)?;
    let model: Table = model.parse().ok()?;
    t.insert("model".into(), model.into());
    for kv in train {
        pixmim_core::config::set_dotted(&mut t, kv).ok()?;
    }
    Some(t)
}

pub fn preset(name: &str) -> Option<Table> {
    match name {
        "base" => convmae(
            "base",
            r#"img_size = 224
patch_size = [4, 2, 2]
embed_dim = [256, 384, 768]
depth = [2, 2, 11]
num_heads = 12
mlp_ratio = [4.0, 4.0, 4.0]
decoder_embed_dim = 512
decoder_depth = 8
decoder_num_heads = 16
norm_pix = true
pos_embed = "official""#,
            &[
                "train.batch_size=128",
                "train.accum_iter=24",
                "train.epochs=1600.0",
            ],
        ),
        // CPU runs: 32 px, patches 2/2/2 (mask and target cells of 8 px, 4x4 grid).
        "tiny" => convmae(
            "tiny",
            r#"img_size = 32
patch_size = [2, 2, 2]
embed_dim = [32, 48, 96]
depth = [1, 1, 2]
num_heads = 3
mlp_ratio = [4.0, 4.0, 4.0]
decoder_embed_dim = 64
decoder_depth = 1
decoder_num_heads = 4
norm_pix = true
pos_embed = "official""#,
            &[],
        ),
        _ => None,
    }
}
