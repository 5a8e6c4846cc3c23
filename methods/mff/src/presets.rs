//! MFF recipes (spec §4.2): mmpretrain's MAE 300e recipe (row-first pos-embed, mm no-decay keys,
//! LinearLR(1e-4) + cosine, 8 x 512, seed 2) with PixMIM's Simple Resized Crop.
use toml::Table;

pub const NAMES: &[&str] = &["base", "tiny"];

fn mff(mae_preset: &str, out_indices: &str) -> Option<Table> {
    let mut t = pixmim_mae::presets::preset(mae_preset)?;
    let mut set = |kv: &str| pixmim_core::config::set_dotted(&mut t, kv).ok();
    set(&format!("model.out_indices={out_indices}"))?;
    set("seed=2")?;
    let src: Table = "name = \"src\"\ninterpolation = \"bilinear\"\npadding = 4\nhflip = 0.5"
        .parse()
        .ok()?;
    t.insert("augmentation".into(), src.into());
    Some(t)
}

pub fn preset(name: &str) -> Option<Table> {
    match name {
        "base" => mff("mm", "[0, 2, 4, 6, 8, 11]"),
        // CPU runs: MAE tiny (4 blocks) fusing blocks 0, 1 and 3.
        "tiny" => {
            let mut t = mff("tiny", "[0, 1, 3]")?;
            pixmim_core::config::set_dotted(&mut t, "optim.no_decay=\"mm\"").ok()?;
            Some(t)
        }
        _ => None,
    }
}
