//! Mixup and CutMix per batch as timm's `Mixup(mode="batch")`, MAE's fine-tuning setting
//! (`--mixup 0.8 --cutmix 1.0 --mixup_prob 1.0 --mixup_switch_prob 0.5 --smoothing 0.1`):
//! with probability `prob` the batch is mixed with itself reversed (image i with image
//! B - 1 - i), by CutMix with probability `switch_prob` (a box of area 1 - lambda pasted,
//! lambda then corrected to the box's real area), otherwise by Mixup (a blend with weight
//! lambda); lambda ~ Beta(alpha, alpha) of the chosen one. The targets are the smoothed
//! one-hot labels mixed with the same lambda.
use rand::rngs::StdRng;
use rand::Rng;
use rand_distr::{Beta, Distribution};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Mixup {
    /// Beta parameter of Mixup; 0 turns Mixup off.
    pub mixup_alpha: f64,
    /// Beta parameter of CutMix; 0 turns CutMix off.
    pub cutmix_alpha: f64,
    /// Probability that a batch is mixed at all.
    pub prob: f64,
    /// Probability of CutMix rather than Mixup when both are on.
    pub switch_prob: f64,
}

/// What one batch got: `lambda` is the weight of the original image (1 = unmixed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MixOutcome {
    pub lambda: f64,
    /// CutMix box (top, left, height, width), when CutMix ran.
    pub cutmix_box: Option<[usize; 4]>,
}

impl Mixup {
    /// MAE's fine-tuning defaults.
    pub fn official() -> Self {
        Self {
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            prob: 1.0,
            switch_prob: 0.5,
        }
    }

    pub fn off() -> Self {
        Self {
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            prob: 1.0,
            switch_prob: 0.5,
        }
    }

    pub fn describe(&self) -> String {
        if !self.enabled() {
            return "no Mixup/CutMix".into();
        }
        format!(
            "Mixup(alpha={}) / CutMix(alpha={}) on {}% of batches, CutMix {}% of those",
            self.mixup_alpha,
            self.cutmix_alpha,
            100.0 * self.prob,
            100.0 * self.switch_prob
        )
    }

    pub fn enabled(&self) -> bool {
        (self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0) && self.prob > 0.0
    }

    pub fn validate(&self, batch: usize) -> Result<()> {
        let bad = |k: &str, m: String| Err(Error::Usage(format!("--{k}: {m}")));
        for (k, v) in [("mixup", self.mixup_alpha), ("cutmix", self.cutmix_alpha)] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(k, format!("must be >= 0 (0 turns it off), got {v}"));
            }
        }
        for (k, v) in [
            ("mixup-prob", self.prob),
            ("mixup-switch-prob", self.switch_prob),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(k, format!("must be a probability in [0, 1], got {v}"));
            }
        }
        if self.enabled() && !batch.is_multiple_of(2) {
            return bad(
                "batch",
                format!("Mixup/CutMix pair image i with B - 1 - i: the batch must be even, got {batch} (or --mixup 0 --cutmix 0)"),
            );
        }
        Ok(())
    }

    /// Mix a batch of (B, C, H, W) images in place; the draws come from `rng` only.
    pub fn mix(
        &self,
        images: &mut [f32],
        b: usize,
        c: usize,
        h: usize,
        w: usize,
        rng: &mut StdRng,
    ) -> MixOutcome {
        let unmixed = MixOutcome {
            lambda: 1.0,
            cutmix_box: None,
        };
        if !self.enabled() || rng.gen::<f64>() >= self.prob {
            return unmixed;
        }
        let use_cutmix = if self.mixup_alpha > 0.0 && self.cutmix_alpha > 0.0 {
            rng.gen::<f64>() < self.switch_prob
        } else {
            self.cutmix_alpha > 0.0
        };
        let alpha = if use_cutmix {
            self.cutmix_alpha
        } else {
            self.mixup_alpha
        };
        let lambda = Beta::new(alpha, alpha).expect("alpha > 0").sample(rng);
        let n = c * h * w;
        assert_eq!(images.len(), b * n);
        let original = images.to_vec();
        let partner = |i: usize| &original[(b - 1 - i) * n..(b - i) * n];
        if use_cutmix {
            let [top, left, bh, bw] = cutmix_box(h, w, lambda, rng);
            for (i, img) in images.chunks_exact_mut(n).enumerate() {
                let other = partner(i);
                for (plane, other) in img.chunks_exact_mut(h * w).zip(other.chunks_exact(h * w)) {
                    for y in top..top + bh {
                        let row = y * w + left..y * w + left + bw;
                        plane[row.clone()].copy_from_slice(&other[row]);
                    }
                }
            }
            MixOutcome {
                lambda: 1.0 - (bh * bw) as f64 / (h * w) as f64,
                cutmix_box: Some([top, left, bh, bw]),
            }
        } else {
            let (l, r) = (lambda as f32, (1.0 - lambda) as f32);
            for (i, img) in images.chunks_exact_mut(n).enumerate() {
                for (v, o) in img.iter_mut().zip(partner(i)) {
                    *v = *v * l + *o * r;
                }
            }
            MixOutcome {
                lambda,
                cutmix_box: None,
            }
        }
    }
}

/// timm's `rand_bbox`: sides `int(side * sqrt(1 - lambda))` centred on a uniform point,
/// clipped to the image (so the pasted area can be smaller than 1 - lambda).
pub fn cutmix_box(h: usize, w: usize, lambda: f64, rng: &mut StdRng) -> [usize; 4] {
    let ratio = (1.0 - lambda).max(0.0).sqrt();
    let (cut_h, cut_w) = ((h as f64 * ratio) as i64, (w as f64 * ratio) as i64);
    let cy = rng.gen_range(0..h as i64);
    let cx = rng.gen_range(0..w as i64);
    let clip = |v: i64, side: usize| v.clamp(0, side as i64) as usize;
    let (yl, yh) = (clip(cy - cut_h / 2, h), clip(cy + cut_h / 2, h));
    let (xl, xh) = (clip(cx - cut_w / 2, w), clip(cx + cut_w / 2, w));
    [yl, xl, yh - yl, xh - xl]
}

/// timm's `mixup_target`: smoothed one-hot labels (on = 1 - eps + eps / C, off = eps / C),
/// lambda of each image's own and 1 - lambda of its partner's. Row-major (B, C).
pub fn mixed_targets(labels: &[usize], classes: usize, lambda: f64, smoothing: f64) -> Vec<f32> {
    let b = labels.len();
    let off = smoothing / classes as f64;
    let on = 1.0 - smoothing + off;
    let mut t = vec![0.0f32; b * classes];
    for (i, row) in t.chunks_exact_mut(classes).enumerate() {
        for (k, v) in row.iter_mut().enumerate() {
            let own = if labels[i] == k { on } else { off };
            let theirs = if labels[b - 1 - i] == k { on } else { off };
            *v = (lambda * own + (1.0 - lambda) * theirs) as f32;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Four 1-channel 4x4 images, image i filled with the value i.
    fn batch() -> Vec<f32> {
        (0..4).flat_map(|i| vec![i as f32; 16]).collect()
    }

    #[test]
    fn mixup_blends_each_image_with_its_mirror_partner() {
        let m = Mixup {
            cutmix_alpha: 0.0,
            ..Mixup::official()
        };
        let mut x = batch();
        let o = m.mix(&mut x, 4, 1, 4, 4, &mut StdRng::seed_from_u64(0));
        assert!(o.cutmix_box.is_none() && o.lambda > 0.0 && o.lambda < 1.0);
        for i in 0..4 {
            let want = o.lambda * i as f64 + (1.0 - o.lambda) * (3 - i) as f64;
            assert!(x[i * 16..(i + 1) * 16]
                .iter()
                .all(|&v| (v as f64 - want).abs() < 1e-5));
        }
    }

    #[test]
    fn cutmix_pastes_a_box_and_corrects_lambda_to_its_area() {
        let m = Mixup {
            mixup_alpha: 0.0,
            ..Mixup::official()
        };
        for s in 0..50 {
            let mut x = batch();
            let o = m.mix(&mut x, 4, 1, 4, 4, &mut StdRng::seed_from_u64(s));
            let [t, l, bh, bw] = o.cutmix_box.expect("cutmix");
            assert!(t + bh <= 4 && l + bw <= 4);
            assert!((o.lambda - (1.0 - (bh * bw) as f64 / 16.0)).abs() < 1e-12);
            for i in 0..4 {
                let img = &x[i * 16..(i + 1) * 16];
                let pasted = img.iter().filter(|&&v| v == (3 - i) as f32).count();
                // Image 1's partner is 2 and vice versa; in the box every pixel is the partner's.
                assert_eq!(pasted, bh * bw, "seed {s} image {i}");
                for y in 0..4 {
                    for xx in 0..4 {
                        let inside = (t..t + bh).contains(&y) && (l..l + bw).contains(&xx);
                        let want = if inside { 3 - i } else { i } as f32;
                        assert_eq!(img[y * 4 + xx], want);
                    }
                }
            }
        }
    }

    #[test]
    fn the_switch_and_beta_draws_have_timms_statistics() {
        let m = Mixup::official();
        let mut rng = StdRng::seed_from_u64(9);
        let (mut cut, mut mix_lams) = (0, Vec::new());
        for _ in 0..4000 {
            let mut x = vec![0.0; 2 * 3 * 8 * 8];
            let o = m.mix(&mut x, 2, 3, 8, 8, &mut rng);
            match o.cutmix_box {
                Some(_) => cut += 1,
                None => mix_lams.push(o.lambda),
            }
        }
        // switch 0.5: ~2000 CutMix (sd ~32). Mixup's lambda ~ Beta(0.8, 0.8): mean 1/2,
        // variance 1 / (4 (2 alpha + 1)) = 0.0962.
        assert!((1850..2150).contains(&cut), "{cut}");
        let n = mix_lams.len() as f64;
        let mean = mix_lams.iter().sum::<f64>() / n;
        let var = mix_lams.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n;
        assert!(
            (mean - 0.5).abs() < 0.02 && (var - 0.0962).abs() < 0.008,
            "{mean} {var}"
        );
        // Off, or with prob 0: nothing changes.
        let mut x = batch();
        assert_eq!(Mixup::off().mix(&mut x, 4, 1, 4, 4, &mut rng).lambda, 1.0);
        let never = Mixup {
            prob: 0.0,
            ..Mixup::official()
        };
        assert_eq!(never.mix(&mut x, 4, 1, 4, 4, &mut rng).lambda, 1.0);
        assert_eq!(x, batch());
    }

    #[test]
    fn targets_are_smoothed_mixed_one_hots_that_sum_to_one() {
        let t = mixed_targets(&[0, 2, 1], 3, 0.7, 0.1);
        // Image 0 (class 0) mixes with image 2 (class 1).
        let (on, off) = (0.9 + 0.1 / 3.0, 0.1 / 3.0);
        let want0 = [0.7 * on + 0.3 * off, 0.7 * off + 0.3 * on, off];
        for k in 0..3 {
            assert!((t[k] as f64 - want0[k]).abs() < 1e-6);
        }
        for row in t.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        // lambda 1 and no smoothing: the plain one-hot.
        assert_eq!(mixed_targets(&[1, 0], 2, 1.0, 0.0), [0.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn an_odd_batch_or_a_bad_probability_is_refused_by_name() {
        let e = Mixup::official().validate(7).unwrap_err().to_string();
        assert!(e.contains("--batch") && e.contains("even"), "{e}");
        assert!(Mixup::off().validate(7).is_ok());
        let e = Mixup {
            switch_prob: 1.5,
            ..Mixup::official()
        }
        .validate(8)
        .unwrap_err();
        assert!(e.to_string().contains("--mixup-switch-prob"));
    }
}
