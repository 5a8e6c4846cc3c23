//! `pixmim shards`: pack a dataset into tar shards in the WebDataset layout
//! ([`pixmim::data::pack`]), which `--data 'DIR/PREFIX-{000000..000NNN}.tar'` reads back.
use std::path::PathBuf;

use clap::Args;
use pixmim::data::pack::{pack, PackOptions};
use pixmim::data::Dataset;
use pixmim::Result;

#[derive(Args, Clone)]
pub struct ShardsArgs {
    /// The dataset to pack: an image folder (class sub-folders become `.cls` labels), a list
    /// file, an IDX images file (packed as PNG) or shards (repacked).
    #[arg(long)]
    data: PathBuf,
    /// The folder the shards go to.
    #[arg(long)]
    out: PathBuf,
    /// Shard names: PREFIX-000000.tar, PREFIX-000001.tar, ...
    #[arg(long, default_value = "train")]
    prefix: String,
    /// Samples per shard (ImageNet's 1.28 M images in 1,024 shards: 1,252).
    #[arg(long, default_value_t = 1000)]
    per_shard: usize,
    /// The seed of the samples' order (shards are shuffled, as readers that stream them need).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep the dataset's order instead (the shards then train exactly as the folder does).
    #[arg(long)]
    in_order: bool,
}

pub fn run(a: &ShardsArgs) -> Result<()> {
    let ds = Dataset::open(&a.data)?;
    let t0 = std::time::Instant::now();
    let packed = pack(
        &ds,
        &PackOptions {
            out: a.out.clone(),
            prefix: a.prefix.clone(),
            per_shard: a.per_shard,
            shuffle_seed: (!a.in_order).then_some(a.seed),
        },
    )?;
    let labels = match &ds.labels {
        Some(_) => format!("{} classes as .cls members", ds.classes.len()),
        None => "no labels".into(),
    };
    println!(
        "packed {} images into {} shard(s) in {:.1} s ({labels}); train on them with\n  --data '{}'",
        packed.samples,
        packed.shards.len(),
        t0.elapsed().as_secs_f64(),
        packed.spec
    );
    Ok(())
}
