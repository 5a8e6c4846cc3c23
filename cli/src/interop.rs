//! `pixmim import` and `pixmim export`: released PyTorch checkpoints in, ours out.
use std::path::PathBuf;

use clap::Args;
use pixmim::interop::{self, Format};
use pixmim::job::ImportOptions;
use pixmim::{Error, Result};

use crate::Compose;

#[derive(Args)]
pub struct ImportArgs {
    /// official-METHOD (official-mae, official-convmae, ...: any registered method), mmselfsup,
    /// mmpretrain, timm, safetensors
    #[arg(long = "from")]
    from: String,
    #[command(flatten)]
    compose: Compose,
    /// The checkpoint to read (`.pth` or `.safetensors`).
    input: PathBuf,
    /// The pixmim checkpoint to write (safetensors).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct ExportArgs {
    /// timm (encoder only), official-METHOD (whole model: official-mae, official-convmae,
    /// ...), mmselfsup, mmpretrain, detectron2, mmseg
    #[arg(long = "to")]
    to: String,
    /// A pixmim checkpoint.
    checkpoint: PathBuf,
    /// The safetensors file to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn import(a: &ImportArgs) -> Result<()> {
    let format = Format::parse(&a.from)?;
    let mut compose = a.compose.clone();
    if compose.method.is_none() {
        return Err(Error::Usage(
            "--method is needed: which model do these weights belong to?".into(),
        ));
    }
    // mm* checkpoints come from mm recipes; their pos-embed orientation is the mm one (the
    // stored tables are loaded as they are, numerics §0.3).
    if compose.preset.is_none() && matches!(format, Format::Mmselfsup | Format::Mmpretrain) {
        compose.preset = Some("mm".into());
        if crate::compose(&compose, vec![]).is_err() {
            compose.preset = None;
        }
    }
    let c = crate::compose(&compose, vec![])?;
    let tensors = interop::read_state_dict(&a.input, format)?;
    let opts = ImportOptions {
        input: a.input.clone(),
        tensors,
        out: a.out.clone(),
    };
    let report = c.import(&opts)?;
    if !report.fresh.is_empty() {
        eprintln!(
            "note: the file has no decoder; {} decoder parameters are freshly initialised",
            report.fresh.len()
        );
    }
    if !report.ignored.is_empty() {
        eprintln!(
            "note: not loaded (not part of a MIM model): {}",
            report.ignored.join(", ")
        );
    }
    println!(
        "imported {} tensors from {} into {} -> {}",
        report.loaded,
        a.input.display(),
        c.method.name(),
        a.out.display()
    );
    Ok(())
}

pub fn export(a: &ExportArgs) -> Result<()> {
    let format = Format::parse(&a.to)?;
    if format == Format::Safetensors {
        return Err(Error::Usage(
            "--to safetensors: name the key layout instead (official-mae, timm, mmselfsup, ...)"
                .into(),
        ));
    }
    let n = interop::export(&a.checkpoint, format, &a.out)?;
    println!("wrote {n} tensors ({}) -> {}", a.to, a.out.display());
    Ok(())
}
