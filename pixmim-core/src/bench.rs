//! Measurements behind `pixmim bench`: data-pipeline throughput and target cost. Training
//! steps are timed by [`crate::engine::step_bench`].
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::imageops::FilterType;

use crate::data::seed::{rng, Purpose};
use crate::error::{Error, Result};
use crate::traits::{Augmentation, ImageBatch, TargetGenerator};

/// ImageNet's typical photo: 500x375.
pub const IMAGENET_LIKE: (u32, u32) = (500, 375);

/// Write `count` ImageNet-sized JPEGs (quality 90, like ImageNet's) made from the photos in
/// `samples` (centre-cropped to 4:3 and upscaled) into `dir`, so the pipeline benchmark
/// decodes real photographic content at the real size without any download.
pub fn imagenet_like_jpegs(samples: &Path, dir: &Path, count: usize) -> Result<Vec<PathBuf>> {
    let ds = crate::data::Dataset::open(samples)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (w, h) = IMAGENET_LIKE;
    let mut out = Vec::new();
    for i in 0..count {
        let src = ds.read(i % ds.len())?;
        let (sw, sh) = src.dimensions();
        // Largest 4:3 window, shifted per copy so repeated sources differ.
        let (cw, ch) = if sw * 3 >= sh * 4 {
            (sh * 4 / 3, sh)
        } else {
            (sw, sw * 3 / 4)
        };
        let shift = (i / ds.len()) as u32 * 7;
        let x = ((sw - cw) / 2 + shift).min(sw - cw);
        let crop = image::imageops::crop_imm(&src, x, (sh - ch) / 2, cw, ch).to_image();
        let big = image::imageops::resize(&crop, w, h, FilterType::CatmullRom);
        let path = dir.join(format!("photo-{i:03}.jpg"));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&big)
            .map_err(|e| Error::data(&path, e.to_string()))?;
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        out.push(path);
    }
    Ok(out)
}

/// Images per second through decode + augmentation (crop, resize, flip, normalise) on
/// `threads` threads, cycling over `files` for at least `min_secs`. File bytes are read once
/// up front, so the number is the CPU work, not the disk. `scaled_decode` as
/// `data.scaled_decode`.
pub fn pipeline_images_per_second(
    files: &[PathBuf],
    aug: &dyn Augmentation,
    threads: usize,
    min_secs: f64,
    scaled_decode: bool,
) -> Result<f64> {
    use rayon::prelude::*;
    let blobs: Vec<(PathBuf, Vec<u8>)> = files
        .iter()
        .map(|p| Ok((p.clone(), std::fs::read(p).map_err(|e| Error::io(p, e))?)))
        .collect::<Result<_>>()?;
    if blobs.is_empty() {
        return Err(Error::Usage(
            "the pipeline benchmark needs at least one image".into(),
        ));
    }
    let (h, w) = aug.output_size();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| Error::Usage(format!("thread pool: {e}")))?;
    let one = |k: usize, out: &mut [f32]| -> Result<()> {
        let (path, bytes) = &blobs[k % blobs.len()];
        // What a data worker does: check the file, decode what the view needs, augment.
        let img = crate::data::decode::Encoded::new(path, bytes.clone(), scaled_decode)?;
        aug.apply_encoded(&img, &mut rng(0, Purpose::Augment, k as u64), out)
    };
    let chunk = 16 * threads.max(1);
    let t0 = Instant::now();
    let mut done = 0usize;
    pool.install(|| -> Result<()> {
        let mut bufs = vec![vec![0f32; 3 * h * w]; chunk];
        while done == 0 || t0.elapsed().as_secs_f64() < min_secs {
            bufs.par_iter_mut()
                .enumerate()
                .try_for_each(|(j, out)| one(done + j, out))?;
            done += chunk;
        }
        Ok(())
    })?;
    Ok(done as f64 / t0.elapsed().as_secs_f64())
}

/// The middle value (upper middle for an even count); NaN when empty.
/// What listing a folder costs ([`listing`]).
#[derive(Clone, Debug)]
pub struct ListingTiming {
    pub files: usize,
    /// Walked, no cache (the median of the rounds).
    pub walk_s: f64,
    /// From the cache the first walk wrote.
    pub cached_s: f64,
    /// Memory per item beside the path's own bytes: the `PathBuf`, the label, and the
    /// buffer's spare capacity.
    pub bytes_per_file: f64,
}

/// Time [`crate::data::Dataset::open`] of an image folder `rounds` times walked and `rounds`
/// times from a listing cache in `scratch` (the page cache is as the machine left it).
pub fn listing(root: &Path, rounds: usize, scratch: &Path) -> Result<ListingTiming> {
    use crate::data::listing::list;
    let time = |cache: Option<&Path>| -> Result<(f64, Vec<PathBuf>)> {
        let t0 = std::time::Instant::now();
        let l = list(root, cache)?;
        Ok((t0.elapsed().as_secs_f64(), l.items))
    };
    let cache = scratch.join("listing-cache");
    let (mut walks, mut cached) = (Vec::new(), Vec::new());
    let mut items = Vec::new();
    for _ in 0..rounds.max(1) {
        let _ = std::fs::remove_dir_all(&cache);
        let (s, i) = time(None)?;
        walks.push(s);
        items = i;
        time(Some(&cache))?;
        cached.push(time(Some(&cache))?.0);
    }
    let beside: usize = items
        .iter()
        .map(|p| {
            std::mem::size_of::<PathBuf>() + std::mem::size_of::<usize>() + p.capacity()
                - p.as_os_str().len()
        })
        .sum();
    Ok(ListingTiming {
        files: items.len(),
        walk_s: median(&walks),
        cached_s: median(&cached),
        bytes_per_file: beside as f64 / items.len().max(1) as f64,
    })
}

/// An ImageNet-shaped folder for [`listing`]: `files` hard links of one image spread over
/// `classes` folders, named as ImageNet's are.
pub fn imagenet_like_tree(image: &Path, dir: &Path, files: usize, classes: usize) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    // A file takes at most 65,000 links on ext4: a copy of the image per 50,000 files.
    let copies: Vec<PathBuf> = (0..files.div_ceil(50_000).max(1))
        .map(|k| {
            let c = dir.join(format!("source-{k}.jpg"));
            std::fs::copy(image, &c).map_err(|e| Error::io(&c, e))?;
            Ok(c)
        })
        .collect::<Result<_>>()?;
    for c in 0..classes {
        let wnid = format!("n{:08}", 1_440_764 + c * 1000);
        let folder = dir.join("train").join(&wnid);
        std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        for i in (c..files).step_by(classes) {
            let p = folder.join(format!("{wnid}_{}.JPEG", 13 + 7 * i));
            std::fs::hard_link(&copies[i / 50_000], &p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A batch of standard-normal images (what a normalised image looks like to the model).
pub fn normal_images(batch: usize, (h, w): (usize, usize), seed: u64) -> ImageBatch {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut images = ImageBatch::zeros(batch, 3, h, w);
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    for v in images.data.iter_mut() {
        *v = StandardNormal.sample(&mut r);
    }
    images
}

/// Milliseconds per image of `target` on a batch of `batch` standard-normal images,
/// median of `reps` runs.
pub fn target_ms_per_image(
    target: &dyn TargetGenerator,
    size: (usize, usize),
    batch: usize,
    reps: usize,
) -> f64 {
    let images = normal_images(batch, size, 0);
    let times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t0 = Instant::now();
            std::hint::black_box(target.generate(&images));
            t0.elapsed().as_secs_f64() * 1e3 / batch as f64
        })
        .collect();
    median(&times)
}

/// A card's dense (no sparsity) 16-bit tensor-core peak in TFLOP/s, from NVIDIA's data sheets,
/// by the name the driver gives: the denominator of the model FLOP utilisation (MFU) that
/// `pixmim bench` reports, the usual convention whatever precision the step runs in (f32
/// matmuls run as TF32 on these cards, at half this peak). `None` for cards not listed here;
/// `pixmim bench --peak-tflops` gives it for those.
pub fn dense_bf16_peak_tflops(card: &str) -> Option<f64> {
    let card = card.to_ascii_uppercase();
    let has = |s: &str| card.contains(s);
    // Most specific first: the PCIe and NVL boards run at lower clocks than SXM.
    let table: [(&[&str], f64); 7] = [
        (&["H100", "PCIE"], 756.5),
        (&["H100", "NVL"], 835.5),
        (&["H100"], 989.4),
        (&["H200", "NVL"], 835.5),
        (&["H200"], 989.4),
        (&["A100"], 312.0),
        (&["L40S"], 362.1),
    ];
    table
        .iter()
        .find(|(keys, _)| keys.iter().all(|k| has(k)))
        .map(|&(_, peak)| peak)
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::{RandomResizedCrop, RandomResizedCropParams};

    #[test]
    fn card_peaks_match_the_driver_names_most_specific_first() {
        assert_eq!(dense_bf16_peak_tflops("NVIDIA H100 80GB HBM3"), Some(989.4));
        assert_eq!(dense_bf16_peak_tflops("NVIDIA H100 PCIe"), Some(756.5));
        assert_eq!(dense_bf16_peak_tflops("NVIDIA H100 NVL"), Some(835.5));
        assert_eq!(dense_bf16_peak_tflops("NVIDIA H200"), Some(989.4));
        assert_eq!(dense_bf16_peak_tflops("NVIDIA H200 NVL"), Some(835.5));
        assert_eq!(dense_bf16_peak_tflops("NVIDIA A100-SXM4-80GB"), Some(312.0));
        assert_eq!(dense_bf16_peak_tflops("NVIDIA GeForce GTX 1080"), None);
    }

    #[test]
    fn the_pipeline_benchmark_decodes_and_counts_real_work() {
        let dir = std::env::temp_dir().join(format!("pixmim-bench-{}", std::process::id()));
        let samples = dir.join("samples");
        std::fs::create_dir_all(&samples).unwrap();
        image::RgbImage::from_fn(80, 60, |x, y| image::Rgb([x as u8, y as u8, 7]))
            .save(samples.join("a.png"))
            .unwrap();
        let files = imagenet_like_jpegs(&samples, &dir.join("jpegs"), 3).unwrap();
        assert_eq!(files.len(), 3);
        let img = crate::data::decode::decode(&files[2]).unwrap();
        assert_eq!(img.dimensions(), IMAGENET_LIKE);
        let params: RandomResizedCropParams = toml::from_str("").unwrap();
        let aug = RandomResizedCrop::new((32, 32), params).unwrap();
        let rate = pipeline_images_per_second(&files, &aug, 1, 0.05, true).unwrap();
        assert!(rate.is_finite() && rate > 0.0);
        std::fs::write(dir.join("broken.jpg"), b"x").unwrap();
        let e =
            pipeline_images_per_second(&[dir.join("broken.jpg")], &aug, 1, 0.0, true).unwrap_err();
        assert!(e.to_string().contains("broken.jpg"), "{e}");
        assert!(peak_rss_bytes().unwrap_or(1) > 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
