//! Shape bias (Geirhos et al. 2019; the PixMIM paper's Figure 8) on any labelled set with
//! object masks, from the set itself: each cue-conflict image is the silhouette (object mask)
//! of an image of class A filled with the texture of an image of class B != A. The texture is
//! the largest rectangle of B's pixels that lies wholly inside B's mask, mirror-tiled, so no
//! outline of B survives; outside the silhouette is one flat colour (the mean background of
//! the set), so A contributes nothing but its shape. A classifier's decision on such an
//! image is a shape decision when it names A, a texture decision when it names B; shape bias
//! = shape / (shape + texture) decisions, overall and per class of the shape.
//!
//! The set is written as PNG files (`NNNNNN.png`, with `pairs.csv` naming each image's two
//! sources and classes), so it can also be looked at, or scored by another framework.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::{Rgb, RgbImage};
use rand::Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::data::dataset::{Dataset, Storage};
use crate::data::loader::Source;
use crate::data::seed::{rng, Purpose};
use crate::error::{Error, Result};
use crate::job::{ClassifyOptions, Pool, View};
use crate::object_mask::{Foreground, MaskSource};
use crate::registry::Composed;
use crate::traits::Augmentation;

/// An axis-aligned rectangle of pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

/// The rectangle of largest area whose every pixel is inside `mask` (the largest rectangle
/// under the histogram of each row's run lengths); `None` for an empty mask.
pub fn largest_inner_rect(mask: &Foreground) -> Option<Rect> {
    let (w, h) = (mask.width, mask.height);
    let mut heights = vec![0usize; w];
    let mut best: Option<Rect> = None;
    let mut stack: Vec<usize> = Vec::with_capacity(w + 1);
    for y in 0..h {
        for (x, height) in heights.iter_mut().enumerate() {
            *height = if mask.inside[y * w + x] {
                *height + 1
            } else {
                0
            };
        }
        stack.clear();
        for x in 0..=w {
            let here = if x < w { heights[x] } else { 0 };
            while let Some(&top) = stack.last() {
                if heights[top] <= here {
                    break;
                }
                stack.pop();
                let height = heights[top];
                let left = stack.last().map_or(0, |&l| l + 1);
                let width = x - left;
                if best.is_none_or(|b| width * height > b.w * b.h) {
                    best = Some(Rect {
                        x: left,
                        y: y + 1 - height,
                        w: width,
                        h: height,
                    });
                }
            }
            stack.push(x);
        }
    }
    best
}

/// Is `patch` big enough to carry a texture: each side at least an eighth of the image's
/// shorter side, and at least 2 pixels.
fn usable(patch: Rect, width: usize, height: usize) -> bool {
    let min = (width.min(height) / 8).max(2);
    patch.w >= min && patch.h >= min
}

/// 0, 1, .., n-1, n-1, .., 1, 0, 0, 1, ..: mirror tiling without seams.
fn reflect(i: usize, n: usize) -> usize {
    let p = i % (2 * n);
    if p < n {
        p
    } else {
        2 * n - 1 - p
    }
}

/// The silhouette `shape` filled with `texture`'s pixels inside `patch`, mirror-tiled from
/// the top-left corner; `background` outside the silhouette.
pub fn cue_conflict(
    shape: &Foreground,
    texture: &RgbImage,
    patch: Rect,
    background: Rgb<u8>,
) -> RgbImage {
    RgbImage::from_fn(shape.width as u32, shape.height as u32, |x, y| {
        let (x, y) = (x as usize, y as usize);
        if shape.inside[y * shape.width + x] {
            let tx = patch.x + reflect(x, patch.w);
            let ty = patch.y + reflect(y, patch.h);
            *texture.get_pixel(tx as u32, ty as u32)
        } else {
            background
        }
    })
}

/// One cue-conflict image's sources (dataset items) and their classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Pair {
    pub shape_item: usize,
    pub texture_item: usize,
    pub shape_class: usize,
    pub texture_class: usize,
}

/// A written cue-conflict set: `source` lists its images in `pairs`' order, labelled with
/// their shape's class.
pub struct CueConflictSet {
    pub source: Arc<Source>,
    pub pairs: Vec<Pair>,
    /// Images that could not be a shape (an empty mask) or had no texture partner (every
    /// image with a usable texture is of their class).
    pub skipped: usize,
}

/// What each candidate image offers: its class, whether it has an object, and the texture
/// rectangle (when big enough), with its background's colour sum and pixel count.
struct Candidate {
    class: usize,
    has_object: bool,
    patch: Option<Rect>,
    background: ([u64; 3], u64),
}

/// Build the cue-conflict set of the first `limit` images of `data` (all by default) and
/// write it to `dir`: every image with an object is a shape once, its texture partner drawn
/// (keyed by `seed` and the image) from the images of other classes with a usable texture.
pub fn write_set(
    data: &Source,
    masks: &MaskSource,
    seed: u64,
    limit: Option<usize>,
    dir: &Path,
) -> Result<CueConflictSet> {
    let ds = &data.dataset;
    let labels = ds.class_labels()?;
    let n = limit.unwrap_or(ds.len()).min(ds.len());
    let candidates: Vec<Candidate> = (0..n)
        .into_par_iter()
        .map(|i| -> Result<Candidate> {
            let (img, object) = data.load_with_object(i, Some(masks))?;
            let object = object.expect("a mask source was given");
            let mut sum = [0u64; 3];
            let mut count = 0;
            for (p, inside) in img.pixels().zip(&object.inside) {
                if !inside {
                    for (s, v) in sum.iter_mut().zip(p.0) {
                        *s += v as u64;
                    }
                    count += 1;
                }
            }
            let patch =
                largest_inner_rect(&object).filter(|r| usable(*r, object.width, object.height));
            Ok(Candidate {
                class: labels[i],
                has_object: object.area() > 0,
                patch,
                background: (sum, count),
            })
        })
        .collect::<Result<_>>()?;
    let textures: Vec<usize> = (0..n).filter(|&j| candidates[j].patch.is_some()).collect();
    let (sum, count) = candidates.iter().fold(([0u64; 3], 0u64), |(s, c), k| {
        let (ks, kc) = k.background;
        ([s[0] + ks[0], s[1] + ks[1], s[2] + ks[2]], c + kc)
    });
    let background = Rgb(sum.map(|s| (s as f64 / count.max(1) as f64).round() as u8));
    let mut pairs = Vec::new();
    for (i, a) in candidates.iter().enumerate() {
        let others = textures
            .iter()
            .filter(|&&j| candidates[j].class != a.class)
            .count();
        if !a.has_object || others == 0 {
            continue;
        }
        let mut r = rng(seed, Purpose::CueConflict, i as u64);
        let j = loop {
            let j = textures[r.gen_range(0..textures.len())];
            if candidates[j].class != a.class {
                break j;
            }
        };
        pairs.push(Pair {
            shape_item: i,
            texture_item: j,
            shape_class: a.class,
            texture_class: candidates[j].class,
        });
    }
    if pairs.is_empty() {
        return Err(Error::data(
            &ds.root,
            format!(
                "no cue-conflict image can be made from its first {n} images: it needs objects \
                 in the masks ({masks:?}) and textures from at least two classes"
            ),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let items: Vec<PathBuf> = (0..pairs.len())
        .map(|k| dir.join(format!("{k:06}.png")))
        .collect();
    pairs
        .par_iter()
        .zip(&items)
        .try_for_each(|(p, path)| -> Result<()> {
            let (_, object) = data.load_with_object(p.shape_item, Some(masks))?;
            let texture = data.load(p.texture_item)?;
            let patch = candidates[p.texture_item].patch.expect("a usable texture");
            let img = cue_conflict(&object.expect("a mask"), &texture, patch, background);
            img.save(path).map_err(|e| Error::data(path, e.to_string()))
        })?;
    let class_name = |k: usize| ds.classes.get(k).cloned().unwrap_or_else(|| k.to_string());
    let mut csv = "file,shape_class,texture_class,shape_source,texture_source\n".to_string();
    for (p, path) in pairs.iter().zip(&items) {
        let _ = writeln!(
            csv,
            "{},{},{},{},{}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            class_name(p.shape_class),
            class_name(p.texture_class),
            ds.items[p.shape_item].display(),
            ds.items[p.texture_item].display()
        );
    }
    crate::checkpoint::atomic_write(&dir.join("pairs.csv"), csv.as_bytes())?;
    let set = Dataset {
        root: dir.to_path_buf(),
        items,
        labels: Some(pairs.iter().map(|p| p.shape_class).collect()),
        classes: ds.classes.clone(),
        storage: Storage::Files,
        skipped_links: 0,
    };
    Ok(CueConflictSet {
        source: Arc::new(Source::strict(set)),
        skipped: n - pairs.len(),
        pairs,
    })
}

/// Shape and texture decisions, overall and for each class of the shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ShapeBias {
    pub shape: usize,
    pub texture: usize,
    /// Decisions for a third class (neither cue).
    pub neither: usize,
    /// Indexed by class.
    pub per_class: Vec<ClassDecisions>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClassDecisions {
    pub shape: usize,
    pub texture: usize,
    pub neither: usize,
}

impl ClassDecisions {
    /// shape / (shape + texture); `None` without a decision for either.
    pub fn bias(&self) -> Option<f64> {
        let n = self.shape + self.texture;
        (n > 0).then(|| self.shape as f64 / n as f64)
    }
}

impl ShapeBias {
    /// Score `predicted` (a class per image of `pairs`).
    pub fn score(pairs: &[Pair], predicted: &[usize], classes: usize) -> Self {
        assert_eq!(pairs.len(), predicted.len());
        let mut per_class = vec![ClassDecisions::default(); classes];
        for (p, &y) in pairs.iter().zip(predicted) {
            let c = &mut per_class[p.shape_class];
            if y == p.shape_class {
                c.shape += 1;
            } else if y == p.texture_class {
                c.texture += 1;
            } else {
                c.neither += 1;
            }
        }
        let sum = |f: fn(&ClassDecisions) -> usize| per_class.iter().map(f).sum();
        Self {
            shape: sum(|c| c.shape),
            texture: sum(|c| c.texture),
            neither: sum(|c| c.neither),
            per_class,
        }
    }

    /// shape / (shape + texture) over every image; `None` without a decision for either.
    pub fn bias(&self) -> Option<f64> {
        ClassDecisions {
            shape: self.shape,
            texture: self.texture,
            neither: self.neither,
        }
        .bias()
    }
}

/// The class of each row of (N, classes) logits (the first of equal maxima).
pub fn argmax_rows(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (k, &v)| {
                    if v > best.1 {
                        (k, v)
                    } else {
                        best
                    }
                })
                .0
        })
        .collect()
}

/// `pixmim eval shape-bias`: a fine-tuned classifier on the cue-conflict set of `data`.
pub struct ShapeBiasOptions {
    /// `finetuned.safetensors` from `pixmim eval finetune`.
    pub checkpoint: PathBuf,
    pub device: crate::device::DeviceSpec,
    pub data: Arc<Source>,
    pub masks: MaskSource,
    /// The eval transform the classifier was validated with.
    pub transform: Arc<dyn Augmentation>,
    pub batch_size: usize,
    pub pool: Pool,
    /// Key of the texture partners' draws.
    pub seed: u64,
    /// Where the set is written; `None`: a temporary folder, removed afterwards.
    pub dump: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShapeBiasReport {
    pub images: usize,
    pub skipped: usize,
    pub decisions: ShapeBias,
}

pub fn shape_bias(c: &Composed, opts: &ShapeBiasOptions) -> Result<ShapeBiasReport> {
    let temporary = opts.dump.is_none().then(|| {
        std::env::temp_dir().join(format!(
            "pixmim-cue-conflict-{}-{}",
            std::process::id(),
            opts.seed
        ))
    });
    let dir = opts
        .dump
        .as_ref()
        .or(temporary.as_ref())
        .expect("one is set");
    let result = (|| {
        let set = write_set(&opts.data, &opts.masks, opts.seed, None, dir)?;
        let mut decisions = None;
        c.classify(
            &ClassifyOptions {
                checkpoint: opts.checkpoint.clone(),
                device: opts.device,
                data: Arc::clone(&set.source),
                views: vec![View {
                    transform: Arc::clone(&opts.transform),
                    seed: 0,
                }],
                batch_size: opts.batch_size,
                pool: opts.pool,
            },
            &mut |v| {
                let predicted = argmax_rows(v.logits, v.classes);
                decisions = Some(ShapeBias::score(&set.pairs, &predicted, v.classes));
            },
        )?;
        Ok(ShapeBiasReport {
            images: set.pairs.len(),
            skipped: set.skipped,
            decisions: decisions.expect("one view"),
        })
    })();
    if let Some(t) = &temporary {
        let _ = std::fs::remove_dir_all(t);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(w: usize, h: usize, mut inside: impl FnMut(usize, usize) -> bool) -> Foreground {
        Foreground {
            width: w,
            height: h,
            inside: (0..w * h).map(|k| inside(k % w, k / w)).collect(),
        }
    }

    /// Checked against every rectangle of small random masks.
    #[test]
    fn the_largest_inner_rectangle_is_the_largest() {
        let mut r = rng(0, Purpose::CueConflict, 0);
        for _ in 0..200 {
            let (w, h) = (r.gen_range(1..8), r.gen_range(1..8));
            let m = mask(w, h, |_, _| r.gen_bool(0.7));
            let all_in = |x: usize, y: usize, rw: usize, rh: usize| {
                (y..y + rh).all(|yy| (x..x + rw).all(|xx| m.inside[yy * w + xx]))
            };
            let mut best = 0;
            for y in 0..h {
                for x in 0..w {
                    for rh in 1..=h - y {
                        for rw in 1..=w - x {
                            if all_in(x, y, rw, rh) {
                                best = best.max(rw * rh);
                            }
                        }
                    }
                }
            }
            match largest_inner_rect(&m) {
                None => assert_eq!(best, 0),
                Some(rect) => {
                    assert_eq!(rect.w * rect.h, best);
                    assert!(all_in(rect.x, rect.y, rect.w, rect.h));
                }
            }
        }
    }

    /// The image has A's silhouette exactly, every pixel inside it is one of B's object
    /// pixels, and outside it is the background colour.
    #[test]
    fn a_cue_conflict_image_is_a_silhouette_of_texture() {
        let shape = mask(12, 10, |x, y| {
            (x as i32 - 6).pow(2) + (y as i32 - 5).pow(2) < 16
        });
        let texture = RgbImage::from_fn(12, 10, |x, y| Rgb([x as u8 * 20, y as u8 * 20, 7]));
        let texture_mask = mask(12, 10, |x, y| (2..9).contains(&x) && (3..8).contains(&y));
        let patch = largest_inner_rect(&texture_mask).unwrap();
        assert_eq!(
            patch,
            Rect {
                x: 2,
                y: 3,
                w: 7,
                h: 5
            }
        );
        let img = cue_conflict(&shape, &texture, patch, Rgb([1, 2, 3]));
        for (k, p) in img.pixels().enumerate() {
            if shape.inside[k] {
                let (x, y) = ((p.0[0] / 20) as usize, (p.0[1] / 20) as usize);
                assert!(
                    texture_mask.inside[y * 12 + x],
                    "pixel {k} from outside B's object"
                );
            } else {
                assert_eq!(*p, Rgb([1, 2, 3]));
            }
        }
        assert_eq!(reflect(0, 3), 0);
        assert_eq!(
            (3..9).map(|i| reflect(i, 3)).collect::<Vec<_>>(),
            [2, 1, 0, 0, 1, 2]
        );
    }

    #[test]
    fn decisions_are_counted_per_shape_class() {
        let pair = |s, t| Pair {
            shape_item: 0,
            texture_item: 0,
            shape_class: s,
            texture_class: t,
        };
        let pairs = [pair(0, 1), pair(0, 2), pair(1, 0), pair(2, 0)];
        let b = ShapeBias::score(&pairs, &[0, 2, 2, 0], 3);
        assert_eq!((b.shape, b.texture, b.neither), (1, 2, 1));
        assert_eq!(b.bias(), Some(1.0 / 3.0));
        assert_eq!(b.per_class[0].bias(), Some(0.5));
        assert_eq!(
            b.per_class[1].bias(),
            None,
            "class 1's only decision is neither"
        );
        assert_eq!(b.per_class[2].bias(), Some(0.0));
        assert_eq!(argmax_rows(&[0.1, 0.5, 0.5, 2.0, -1.0, 0.0], 3), [1, 0]);
    }
}

/// A generated set where each class has its own shape and its own texture: a classifier
/// that looks only at the silhouette scores shape bias 1, one that looks only at the colours
/// inside it scores 0.
#[cfg(test)]
mod generated {
    use super::*;

    const SIZE: u32 = 24;

    fn shape_of(class: usize, x: u32, y: u32) -> bool {
        let (dx, dy) = (x as i32 - 12, y as i32 - 12);
        match class {
            0 => dx * dx + dy * dy <= 81,
            1 => dx.abs() <= 8 && dy.abs() <= 8,
            _ => dx.abs() <= 3 || dy.abs() <= 3,
        }
    }

    /// Stripes of two shades of the class's colour, phase shifted per image.
    fn texture_of(class: usize, image: u32, x: u32, y: u32) -> Rgb<u8> {
        let base = [40 + 70 * class as u8, 200 - 60 * class as u8, 90];
        let shade = if (x + y + image) % 4 < 2 { 0 } else { 12 };
        Rgb(base.map(|v| v + shade))
    }

    fn pure_shape(img: &RgbImage) -> usize {
        let overlap = |class| {
            img.enumerate_pixels()
                .filter(|(x, y, p)| (p.0 != [0, 0, 0]) == shape_of(class, *x, *y))
                .count()
        };
        (0..3).max_by_key(|&c| overlap(c)).unwrap()
    }

    fn pure_texture(img: &RgbImage) -> usize {
        let inside: Vec<&Rgb<u8>> = img.pixels().filter(|p| p.0 != [0, 0, 0]).collect();
        let mean =
            |ch: usize| inside.iter().map(|p| p.0[ch] as f64).sum::<f64>() / inside.len() as f64;
        let distance = |class: usize| {
            let t = texture_of(class, 0, 0, 0).0;
            (0..3)
                .map(|ch| (mean(ch) - t[ch] as f64 - 6.0).powi(2))
                .sum::<f64>()
        };
        (0..3)
            .min_by(|&a, &b| distance(a).total_cmp(&distance(b)))
            .unwrap()
    }

    #[test]
    fn pure_shape_scores_one_and_pure_texture_zero() {
        let dir =
            std::env::temp_dir().join(format!("pixmim-shape-bias-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for class in 0..3 {
            let folder = dir.join("data").join(format!("class{class}"));
            std::fs::create_dir_all(&folder).unwrap();
            for image in 0..4 {
                RgbImage::from_fn(SIZE, SIZE, |x, y| {
                    if shape_of(class, x, y) {
                        texture_of(class, image, x, y)
                    } else {
                        Rgb([0, 0, 0])
                    }
                })
                .save(folder.join(format!("{image}.png")))
                .unwrap();
            }
        }
        let data = Source::strict(Dataset::open(&dir.join("data")).unwrap());
        let out = dir.join("set");
        let set = write_set(&data, &MaskSource::NonBlack, 0, None, &out).unwrap();
        assert_eq!((set.pairs.len(), set.skipped), (12, 0));
        assert!(set.pairs.iter().all(|p| p.shape_class != p.texture_class));
        let csv = std::fs::read_to_string(out.join("pairs.csv")).unwrap();
        assert_eq!(csv.lines().count(), 13, "{csv}");
        let images: Vec<RgbImage> = (0..12).map(|i| set.source.load(i).unwrap()).collect();
        let score = |classify: fn(&RgbImage) -> usize| {
            let predicted: Vec<usize> = images.iter().map(classify).collect();
            ShapeBias::score(&set.pairs, &predicted, 3)
        };
        let shape = score(pure_shape);
        assert_eq!((shape.shape, shape.texture, shape.neither), (12, 0, 0));
        assert_eq!(shape.bias(), Some(1.0));
        let texture = score(pure_texture);
        assert_eq!(
            (texture.shape, texture.texture, texture.neither),
            (0, 12, 0)
        );
        assert_eq!(texture.bias(), Some(0.0));
        // The same seed makes the same set; the set's labels are the shapes' classes.
        let again = write_set(&data, &MaskSource::NonBlack, 0, None, &dir.join("again")).unwrap();
        assert_eq!(again.pairs, set.pairs);
        let labels: Vec<usize> = set.pairs.iter().map(|p| p.shape_class).collect();
        assert_eq!(set.source.dataset.labels.as_ref(), Some(&labels));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
