//! Random erasing as timm's `RandomErasing(p, mode="pixel", max_count=1)`, the last step of
//! MAE's fine-tuning transform: with probability `p`, one box of 2%-33% of the image, aspect
//! ratio log-uniform in [0.3, 1/0.3], is replaced by per-pixel N(0, 1) noise. It runs after
//! normalisation, so the noise is in normalised units, as in timm.
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

#[derive(Clone, Debug, PartialEq)]
pub struct RandomErasing {
    pub prob: f64,
    pub min_area: f64,
    pub max_area: f64,
    pub min_aspect: f64,
}

impl RandomErasing {
    /// timm's defaults with MAE's `--reprob`.
    pub fn new(prob: f64) -> Self {
        Self {
            prob,
            min_area: 0.02,
            max_area: 1.0 / 3.0,
            min_aspect: 0.3,
        }
    }

    /// The box (top, left, height, width) to erase in an `h` x `w` image, if any: timm's
    /// ten tries, each needing the box strictly smaller than the image.
    pub fn sample_box(&self, h: usize, w: usize, rng: &mut StdRng) -> Option<[usize; 4]> {
        if rng.gen::<f64>() > self.prob {
            return None;
        }
        let area = (h * w) as f64;
        let (lo, hi) = (self.min_aspect.ln(), (1.0 / self.min_aspect).ln());
        for _ in 0..10 {
            let target = rng.gen_range(self.min_area..=self.max_area) * area;
            let aspect = rng.gen_range(lo..=hi).exp();
            let bh = (target * aspect).sqrt().round() as usize;
            let bw = (target / aspect).sqrt().round() as usize;
            if bw < w && bh < h {
                let top = rng.gen_range(0..=h - bh);
                let left = rng.gen_range(0..=w - bw);
                return Some([top, left, bh, bw]);
            }
        }
        None
    }

    /// Erase in place in a normalised (C, H, W) image.
    pub fn apply(&self, chw: &mut [f32], h: usize, w: usize, rng: &mut StdRng) {
        let Some([top, left, bh, bw]) = self.sample_box(h, w, rng) else {
            return;
        };
        for plane in chw.chunks_exact_mut(h * w) {
            for row in plane.chunks_exact_mut(w).skip(top).take(bh) {
                for v in &mut row[left..left + bw] {
                    *v = StandardNormal.sample(rng);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn erases_a_quarter_of_images_with_boxes_of_the_stated_size_and_noise() {
        let re = RandomErasing::new(0.25);
        let (h, w) = (32, 32);
        let mut erased = 0;
        let mut noise = Vec::new();
        for s in 0..2000u64 {
            let mut img = vec![7.0f32; 3 * h * w];
            re.apply(&mut img, h, w, &mut StdRng::seed_from_u64(s));
            let changed: Vec<usize> = (0..h * w).filter(|&i| img[i] != 7.0).collect();
            if changed.is_empty() {
                continue;
            }
            erased += 1;
            // One box, in every channel, of 2%..33% of the area (rounding of the sides
            // widens it a little), with an aspect ratio within [0.3, 3.33].
            let (ys, xs): (Vec<usize>, Vec<usize>) = changed.iter().map(|i| (i / w, i % w)).unzip();
            let bh = ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1;
            let bw = xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1;
            assert_eq!(bh * bw, changed.len(), "a solid box");
            let frac = (bh * bw) as f64 / (h * w) as f64;
            assert!((0.01..0.40).contains(&frac), "{frac}");
            let ratio = bh as f64 / bw as f64;
            assert!((0.2..5.0).contains(&ratio), "{ratio}");
            for c in 1..3 {
                assert!(changed.iter().all(|&i| img[c * h * w + i] != 7.0));
            }
            noise.extend(changed.iter().map(|&i| img[i] as f64));
        }
        // 500 expected (sd ~19).
        assert!((440..560).contains(&erased), "{erased}");
        let n = noise.len() as f64;
        let mean = noise.iter().sum::<f64>() / n;
        let var = noise.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.02 && (var - 1.0).abs() < 0.03,
            "{mean} {var}"
        );
    }

    #[test]
    fn never_erases_at_p_zero_and_always_at_p_one() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| RandomErasing::new(0.0).sample_box(8, 8, &mut rng).is_none()));
        assert!((0..100).all(|_| RandomErasing::new(1.0)
            .sample_box(64, 64, &mut rng)
            .is_some()));
        // A 2 x 2 image cannot fit a box smaller than itself but with area >= 2% ... except
        // 1 x 1, which rounds from sqrt(0.08..1.33): so tiny images are still handled.
        for _ in 0..100 {
            if let Some([t, l, bh, bw]) = RandomErasing::new(1.0).sample_box(2, 2, &mut rng) {
                assert!(t + bh <= 2 && l + bw <= 2 && bh < 2 && bw < 2);
            }
        }
    }
}
