//! Per-sample random masking (numerics §0.4), drawn on the host.
//!
//! The official code draws `noise ~ U[0,1)` inside the forward pass; drawing it in the data
//! workers instead makes a run a pure function of (seed, step), which is what exact resume
//! needs. The arithmetic is unchanged: argsort the noise ascending, keep the first
//! `int(L * (1 - ratio))`, mask = 1 on removed patches.
pub mod units;
pub use units::{UnitMasking, UnitMaskingParams};

use rand::rngs::StdRng;
use rand::Rng;
use serde::Deserialize;

use crate::component::{CorruptionRegistration, Geometry};
use crate::error::{Error, Result};
use crate::traits::Corruption;

pub use crate::mask::{
    gather_tokens, len_keep, unshuffle_with_mask_tokens, MaskBatch, MaskTensors,
};

/// MAE's random masking over the model's mask grid.
#[derive(Clone, Debug)]
pub struct RandomMasking {
    pub ratio: f64,
    pub num_patches: usize,
}

/// `[masking]` of `random`.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RandomMaskingParams {
    /// Fraction of patches removed (0.75 in every MAE-family recipe).
    pub ratio: f64,
}

impl RandomMasking {
    pub fn new(ratio: f64, num_patches: usize) -> Result<Self> {
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(Error::config(
                "masking.ratio",
                format!("must be in (0, 1), got {ratio}"),
            ));
        }
        if len_keep(num_patches, ratio) == 0 {
            return Err(Error::config(
                "masking.ratio",
                format!("{ratio} keeps no patch of {num_patches}"),
            ));
        }
        Ok(Self { ratio, num_patches })
    }
}

impl Corruption for RandomMasking {
    fn describe(&self) -> String {
        format!(
            "random masking, ratio {} ({} of {} patches kept)",
            self.ratio,
            len_keep(self.num_patches, self.ratio),
            self.num_patches
        )
    }
    fn sample(&self, batch: usize, rng: &mut StdRng) -> MaskBatch {
        let noise: Vec<f32> = (0..batch * self.num_patches)
            .map(|_| rng.gen::<f32>())
            .collect();
        MaskBatch::from_noise(&noise, batch, self.num_patches, self.ratio)
    }
    fn noise_len(&self) -> usize {
        self.num_patches
    }
    fn mask_from_noise(&self, batch: usize, noise: &[f32]) -> Result<MaskBatch> {
        check_noise(noise, batch, self.num_patches)?;
        Ok(MaskBatch::from_noise(
            noise,
            batch,
            self.num_patches,
            self.ratio,
        ))
    }
}

/// Noise of the wrong length or with NaNs would give a meaningless mask; say so.
pub fn check_noise(noise: &[f32], batch: usize, per_sample: usize) -> Result<()> {
    if noise.len() != batch * per_sample {
        return Err(Error::Usage(format!(
            "the noise has {} values; this masking needs {batch} x {per_sample}",
            noise.len()
        )));
    }
    if noise.iter().any(|v| !v.is_finite()) {
        return Err(Error::Usage("the noise holds NaN or Inf".into()));
    }
    Ok(())
}

fn build_random(params: &toml::Table, g: &Geometry) -> Result<Box<dyn Corruption>> {
    let p: RandomMaskingParams = crate::config::parse_params(params, "masking")?;
    Ok(Box::new(RandomMasking::new(
        p.ratio,
        g.mask_grid.0 * g.mask_grid.1,
    )?))
}

inventory::submit! {
    CorruptionRegistration {
        name: "random",
        description: "per-sample random masking (MAE, numerics §0.4)",
        params: &["ratio"],
        build: build_random,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn keeps_49_of_196_and_restore_inverts_shuffle() {
        let m = RandomMasking::new(0.75, 196).unwrap();
        let mb = m.sample(3, &mut StdRng::seed_from_u64(7));
        assert_eq!(mb.len_keep, 49);
        for b in 0..3 {
            let o = b * 196;
            let removed: f32 = mb.mask[o..o + 196].iter().sum();
            assert_eq!(removed, 147.0);
            for t in 0..196 {
                let r = mb.ids_restore[o + t] as usize;
                assert_eq!(mb.ids_shuffle[o + r], t as i64, "restore inverts shuffle");
            }
            // mask = 1 exactly on the patches not in ids_keep
            let keep = &mb.ids_keep()[b * 49..(b + 1) * 49];
            for t in 0..196 {
                let kept = keep.contains(&(t as i64));
                assert_eq!(mb.mask[o + t] == 0.0, kept);
            }
        }
    }

    #[test]
    fn ratio_is_validated() {
        assert!(RandomMasking::new(0.0, 196).is_err());
        assert!(RandomMasking::new(1.0, 196).is_err());
        let e = RandomMasking::new(0.999, 16).unwrap_err().to_string();
        assert!(e.contains("masking.ratio"), "{e}");
        assert_eq!(len_keep(196, 0.75), 49);
        assert_eq!(len_keep(784, 0.75), 196);
    }
}
