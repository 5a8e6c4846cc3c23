//! LSMAE recipes (spec §5.4): the MAE recipe at 448 px with 2x2-patch mask units and the
//! `dec384d12h8b` decoder.
use toml::Table;

pub const NAMES: &[&str] = &["base", "large", "tiny"];

/// Start from MAE's preset of the same size and change what LSMAE changes.
fn from_mae(mae_preset: &str, model: &[(&str, &str)], train: &[(&str, &str)]) -> Option<Table> {
    let mut t = pixmim_mae::presets::preset(mae_preset)?;
    let set = |t: &mut Table, k: &str, v: &str| {
        pixmim_core::config::set_dotted(t, &format!("{k}={v}")).ok()
    };
    for (k, v) in model {
        set(&mut t, &format!("model.{k}"), v)?;
    }
    for (k, v) in train {
        set(&mut t, k, v)?;
    }
    let masking: Table = "name = \"units\"\nratio = 0.75\nunit = 2".parse().ok()?;
    t.insert("masking".into(), masking.into());
    Some(t)
}

pub fn preset(name: &str) -> Option<Table> {
    match name {
        // ViT-B/16 at 448 (784 patches, 196 visible), decoder 384 wide, 12 heads, 8 blocks;
        // effective batch 4096 (32 per GPU x 128 in the release; here 64 x 64 accumulation),
        // 800 epochs.
        "base" => from_mae(
            "base",
            &[
                ("img_size", "448"),
                ("decoder_embed_dim", "384"),
                ("decoder_num_heads", "12"),
                ("decoder_depth", "8"),
            ],
            &[
                ("train.batch_size", "64"),
                ("train.accum_iter", "64"),
                ("train.epochs", "800.0"),
            ],
        ),
        // ViT-L/16 at 448 with the dec512d16h8b decoder.
        "large" => from_mae(
            "large",
            &[("img_size", "448")],
            &[
                ("train.batch_size", "32"),
                ("train.accum_iter", "128"),
                ("train.epochs", "800.0"),
            ],
        ),
        // CPU runs: MAE tiny at 64 px (16x16 patches of 4 px) with 2x2 units.
        "tiny" => from_mae(
            "tiny",
            &[("img_size", "64"), ("decoder_num_heads", "4")],
            &[("train.batch_size", "8")],
        ),
        _ => None,
    }
}
