//! Packing a dataset into tar shards in the WebDataset layout ([`super::shards`] reads them):
//! `PREFIX-000000.tar`, ... in a folder, each sample a `KEY.EXT` member holding the image's
//! bytes as they were (an IDX image as PNG) and, for a labelled set, a `KEY.cls` member with
//! its class number. The archive is deterministic given the order: every header has mode
//! 0644, owner 0 and time 0, so the same data and seed give the same bytes.
//!
//! Images are copied, not decoded: an unreadable image goes into its shard as it is and is met
//! by the run's `data.on_error` policy, like a bad file in a folder.
use std::io::Write;
use std::path::PathBuf;

use rand::seq::SliceRandom;

use super::dataset::Dataset;
use super::seed::{rng, Purpose};
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct PackOptions {
    /// The folder the shards go to (made when missing).
    pub out: PathBuf,
    /// Shard names: `PREFIX-000000.tar`.
    pub prefix: String,
    /// Samples per shard (the last one takes the rest).
    pub per_shard: usize,
    /// Shuffle the samples with this seed (readers that stream shards need it; pixmim's
    /// sampler shuffles globally anyway); `None` keeps the dataset's order.
    pub shuffle_seed: Option<u64>,
}

/// What [`pack`] wrote.
#[derive(Clone, Debug)]
pub struct Packed {
    pub shards: Vec<PathBuf>,
    /// The `--data` value that reads them back: `OUT/PREFIX-{000000..000NNN}.tar`.
    pub spec: String,
    pub samples: usize,
}

/// A ustar header for a regular file `name` of `size` bytes.
fn header(name: &str, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let mut put = |at: usize, text: &str| h[at..at + text.len()].copy_from_slice(text.as_bytes());
    put(0, name);
    put(100, "0000644\0");
    put(108, "0000000\0");
    put(116, "0000000\0");
    put(124, &format!("{size:011o}\0"));
    put(136, "00000000000\0");
    put(148, "        ");
    put(156, "0");
    put(257, "ustar\0");
    put(263, "00");
    let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn member(out: &mut impl Write, name: &str, data: &[u8]) -> std::io::Result<()> {
    out.write_all(&header(name, data.len() as u64))?;
    out.write_all(data)?;
    let pad = (512 - data.len() % 512) % 512;
    out.write_all(&vec![0u8; pad])
}

/// Write `ds` as shards. Existing shards of the same name are refused (naming the first), and
/// each shard is written under a temporary name and renamed when whole, so a stopped pack
/// leaves no shard that looks complete but is not.
pub fn pack(ds: &Dataset, o: &PackOptions) -> Result<Packed> {
    if o.per_shard == 0 {
        return Err(Error::Usage("--per-shard must be at least 1".into()));
    }
    if o.prefix.is_empty() || o.prefix.contains(['/', '{', '}', '*', '?', '[']) {
        return Err(Error::Usage(format!(
            "--prefix {:?}: a plain file name part, without /, braces or glob characters",
            o.prefix
        )));
    }
    let n = ds.len();
    let mut order: Vec<usize> = (0..n).collect();
    if let Some(seed) = o.shuffle_seed {
        order.shuffle(&mut rng(seed, Purpose::Pack, 0));
    }
    let count = n.div_ceil(o.per_shard);
    let name = |s: usize| o.out.join(format!("{}-{s:06}.tar", o.prefix));
    if let Some(existing) = (0..count).map(name).find(|p| p.exists()) {
        return Err(Error::data(
            existing,
            "already exists: pack into an empty folder or choose another --prefix",
        ));
    }
    std::fs::create_dir_all(&o.out).map_err(|e| Error::io(&o.out, e))?;
    let key_width = n.saturating_sub(1).to_string().len().max(8);
    let mut shards = Vec::with_capacity(count);
    for (s, chunk) in order.chunks(o.per_shard).enumerate() {
        let path = name(s);
        let tmp = path.with_extension("tar.partial");
        let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut w = std::io::BufWriter::new(file);
        for (j, &i) in chunk.iter().enumerate() {
            let key = format!("{:0key_width$}", s * o.per_shard + j);
            let (bytes, ext) = ds.encoded(i)?;
            let ext = if ext.is_empty() { "png".into() } else { ext };
            member(&mut w, &format!("{key}.{ext}"), &bytes).map_err(|e| Error::io(&tmp, e))?;
            if let Some(labels) = &ds.labels {
                member(
                    &mut w,
                    &format!("{key}.cls"),
                    labels[i].to_string().as_bytes(),
                )
                .map_err(|e| Error::io(&tmp, e))?;
            }
        }
        w.write_all(&[0u8; 1024]).map_err(|e| Error::io(&tmp, e))?;
        w.into_inner()
            .map_err(|e| Error::io(&tmp, e.into_error()))?
            .sync_all()
            .map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        shards.push(path);
    }
    let spec = match count {
        1 => name(0).display().to_string(),
        _ => o
            .out
            .join(format!("{}-{{000000..{:06}}}.tar", o.prefix, count - 1))
            .display()
            .to_string(),
    };
    Ok(Packed {
        shards,
        spec,
        samples: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shards::{expand_braces, index_shard, ShardIndex};
    use std::path::Path;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pixmim-pack-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A labelled folder of `n` small PNGs in two classes.
    fn folder(dir: &Path, n: usize) -> Dataset {
        for i in 0..n {
            let class = dir.join(["ant", "bee"][i % 2]);
            std::fs::create_dir_all(&class).unwrap();
            image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([i as u8, x as u8, y as u8]))
                .save(class.join(format!("{i:02}.png")))
                .unwrap();
        }
        Dataset::open(dir).unwrap()
    }

    #[test]
    fn brace_ranges_keep_their_padding_and_lists_expand_in_order() {
        assert_eq!(
            expand_braces("a-{008..011}.tar").unwrap(),
            ["a-008.tar", "a-009.tar", "a-010.tar", "a-011.tar"]
        );
        assert_eq!(expand_braces("{8..10}").unwrap(), ["8", "9", "10"]);
        assert_eq!(
            expand_braces("{x,y}-{0..1}").unwrap(),
            ["x-0", "x-1", "y-0", "y-1"]
        );
        assert!(expand_braces("a-{3..1}").unwrap_err().contains("backwards"));
        assert!(expand_braces("a-{1..").unwrap_err().contains("unclosed"));
    }

    /// Packed in order, the shards read back as the folder: the same images, labels and
    /// order, spread over shards of `per_shard`; shuffled, the same images in another order,
    /// the same for the same seed; packing again over them is refused.
    #[test]
    fn shards_read_back_as_the_folder_they_were_packed_from() {
        let dir = tmp("roundtrip");
        let ds = folder(&dir.join("data"), 7);
        let opts = PackOptions {
            out: dir.join("in-order"),
            prefix: "train".into(),
            per_shard: 3,
            shuffle_seed: None,
        };
        let packed = pack(&ds, &opts).unwrap();
        assert_eq!(packed.shards.len(), 3);
        assert!(
            packed.spec.ends_with("train-{000000..000002}.tar"),
            "{}",
            packed.spec
        );
        let back = Dataset::open(Path::new(&packed.spec)).unwrap();
        assert_eq!(back.len(), 7);
        assert_eq!(back.labels, ds.labels);
        for i in 0..7 {
            assert_eq!(back.read(i).unwrap(), ds.read(i).unwrap(), "item {i}");
        }
        assert!(back.items[4].ends_with("train-000001.tar#00000004.png"));
        let again = pack(&ds, &opts).unwrap_err();
        assert!(again.to_string().contains("train-000000.tar"), "{again}");

        let shuffled = |out: &str| {
            let o = PackOptions {
                out: dir.join(out),
                shuffle_seed: Some(5),
                ..opts.clone()
            };
            let p = pack(&ds, &o).unwrap();
            p.shards
                .iter()
                .map(|s| std::fs::read(s).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shuffled("s1"),
            shuffled("s2"),
            "deterministic given the seed"
        );
        let back = Dataset::open(&dir.join("s1/train-*.tar")).unwrap();
        let mut pixels: Vec<_> = (0..7).map(|i| back.read(i).unwrap().into_raw()).collect();
        let mut want: Vec<_> = (0..7).map(|i| ds.read(i).unwrap().into_raw()).collect();
        assert_ne!(pixels, want, "shuffled");
        pixels.sort();
        want.sort();
        assert_eq!(pixels, want, "the same images");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Archives written by GNU tar (long names in GNU and pax form, a folder entry, members
    /// in sub-folders, a sample with two fields) index as pixmim's own do; a cached index is the scanned one and is
    /// rebuilt when the shard changes.
    #[test]
    fn gnu_tar_archives_index_and_the_cache_follows_the_shard() {
        let dir = tmp("gnu");
        let src = dir.join("src");
        let long = "k".repeat(120);
        let sub = src.join("part");
        std::fs::create_dir_all(&sub).unwrap();
        image::RgbImage::new(2, 2)
            .save(sub.join(format!("{long}.png")))
            .unwrap();
        std::fs::write(sub.join(format!("{long}.cls")), "3\n").unwrap();
        image::RgbImage::new(3, 1).save(sub.join("b.jpg")).unwrap();
        std::fs::write(sub.join("b.cls"), "1").unwrap();
        // Another field of sample `b` (key `part/b`, extension `seg.png`): not its image.
        image::RgbImage::new(3, 1)
            .save(sub.join("b.seg.png"))
            .unwrap();
        for format in ["gnu", "pax"] {
            let shard = dir.join(format!("{format}.tar"));
            let status = std::process::Command::new("tar")
                .arg(format!("--format={format}"))
                .args(["--sort=name", "-cf"])
                .arg(&shard)
                .arg("-C")
                .arg(&src)
                .arg("part")
                .status()
                .unwrap();
            assert!(status.success());
            let index = index_shard(&shard).unwrap();
            let got: Vec<(String, Option<u32>)> = index
                .samples
                .iter()
                .map(|s| (s.member.clone(), s.label))
                .collect();
            assert_eq!(
                got,
                [
                    ("part/b.jpg".to_string(), Some(1)),
                    (format!("part/{long}.png"), Some(3))
                ],
                "{format}"
            );
            assert_eq!(index.fault, None);
            let cache = dir.join(format!("cache-{format}"));
            assert_eq!(ShardIndex::load(&shard, Some(&cache)).unwrap(), index);
            assert_eq!(
                ShardIndex::load(&shard, Some(&cache)).unwrap(),
                index,
                "cached"
            );
            // The shard changed (a block appended): the cache entry is stale.
            std::fs::OpenOptions::new()
                .append(true)
                .open(&shard)
                .unwrap()
                .write_all(&[0u8; 512])
                .unwrap();
            assert_eq!(
                ShardIndex::load(&shard, Some(&cache)).unwrap(),
                index_shard(&shard).unwrap()
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
