//! Decoupled masking (LSMAE, numerics §5.2; SimMIM's mask patches are the same idea): the patch grid is cut into s x s units; a permutation of the
//! units decides, and each unit emits its patches in (dx, dy) = (0,0), (0,1), (1,0), (1,1)
//! order, so the first `int(L * (1 - ratio))` of ids_shuffle are whole units.
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Deserialize;

use super::{len_keep, MaskBatch};
use crate::component::{CorruptionRegistration, Geometry};
use crate::error::{Error, Result};
use crate::traits::Corruption;

pub struct UnitMasking {
    pub ratio: f64,
    /// Patch grid (rows, cols).
    pub grid: (usize, usize),
    /// Unit side in patches (`mask_downsampling`).
    pub unit: usize,
}

/// `[masking]` of `units`.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct UnitMaskingParams {
    pub ratio: f64,
    /// Patches per unit side: 2 in every released LSMAE run (`--mask_downsampling 2`), so
    /// `--set masking.name=units` alone gives MAE-224's mask granularity at 448.
    #[serde(default = "two")]
    pub unit: usize,
}

fn two() -> usize {
    2
}

impl UnitMasking {
    pub fn new(ratio: f64, grid: (usize, usize), unit: usize) -> Result<Self> {
        if !(ratio > 0.0 && ratio < 1.0) {
            return Err(Error::config(
                "masking.ratio",
                format!("must be in (0, 1), got {ratio}"),
            ));
        }
        if unit == 0 || unit > grid.0.min(grid.1) {
            return Err(Error::config(
                "masking.unit",
                format!("must be in 1..={}, got {unit}", grid.0.min(grid.1)),
            ));
        }
        Ok(Self { ratio, grid, unit })
    }

    /// ids_shuffle for one sample given a permutation of the units.
    pub fn shuffle_from_units(&self, units: &[usize]) -> Vec<i64> {
        let (gh, gw) = self.grid;
        let s = self.unit;
        let uw = gw.div_ceil(s);
        let mut ids = Vec::with_capacity(gh * gw);
        for &m in units {
            let (x0, y0) = ((m % uw) * s, (m / uw) * s);
            for dx in 0..s {
                for dy in 0..s {
                    let (x, y) = (x0 + dx, y0 + dy);
                    if x < gw && y < gh {
                        ids.push((y * gw + x) as i64); // out-of-grid indices are dropped
                    }
                }
            }
        }
        ids
    }
}

impl Corruption for UnitMasking {
    fn describe(&self) -> String {
        let l = self.grid.0 * self.grid.1;
        format!(
            "unit masking, {0}x{0}-patch units, ratio {1} ({2} of {3} patches kept)",
            self.unit,
            self.ratio,
            len_keep(l, self.ratio),
            l
        )
    }
    fn sample(&self, batch: usize, rng: &mut StdRng) -> MaskBatch {
        let (gh, gw) = self.grid;
        let n_units = gh.div_ceil(self.unit) * gw.div_ceil(self.unit);
        let l = gh * gw;
        let mut shuffles = Vec::with_capacity(batch * l);
        for _ in 0..batch {
            let mut units: Vec<usize> = (0..n_units).collect();
            units.shuffle(rng);
            shuffles.extend(self.shuffle_from_units(&units));
        }
        MaskBatch::from_shuffle(shuffles, batch, l, len_keep(l, self.ratio))
    }
    fn noise_len(&self) -> usize {
        self.grid.0.div_ceil(self.unit) * self.grid.1.div_ceil(self.unit)
    }
    /// One noise value per unit: units in ascending-noise order (numerics §5.2).
    fn mask_from_noise(&self, batch: usize, noise: &[f32]) -> Result<MaskBatch> {
        let n_units = self.noise_len();
        super::check_noise(noise, batch, n_units)?;
        let l = self.grid.0 * self.grid.1;
        let mut shuffles = Vec::with_capacity(batch * l);
        for row in noise.chunks(n_units) {
            let mut units: Vec<usize> = (0..n_units).collect();
            units.sort_by(|&a, &b| row[a].total_cmp(&row[b]));
            shuffles.extend(self.shuffle_from_units(&units));
        }
        Ok(MaskBatch::from_shuffle(
            shuffles,
            batch,
            l,
            len_keep(l, self.ratio),
        ))
    }
}

fn build(params: &toml::Table, g: &Geometry) -> Result<Box<dyn Corruption>> {
    let p: UnitMaskingParams = crate::config::parse_params(params, "masking")?;
    Ok(Box::new(UnitMasking::new(p.ratio, g.mask_grid, p.unit)?))
}

inventory::submit! {
    CorruptionRegistration {
        name: "units",
        description: "decoupled masking over s x s-patch units (LSMAE, numerics §5.2)",
        params: &["ratio", "unit"],
        build,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn noise_per_unit_keeps_the_lowest_noise_units() {
        // 4x4 patch grid, 2x2 units: 4 units, ratio 0.75 keeps 1 unit (4 patches).
        let m = UnitMasking::new(0.75, (4, 4), 2).unwrap();
        assert_eq!(m.noise_len(), 4);
        let mb = m.mask_from_noise(1, &[0.9, 0.8, 0.1, 0.5]).unwrap();
        // unit 2 is the bottom-left 2x2: patches 8, 9, 12, 13
        let kept: Vec<usize> = (0..16).filter(|&i| mb.mask[i] == 0.0).collect();
        assert_eq!(kept, vec![8, 9, 12, 13]);
        assert!(
            m.mask_from_noise(1, &[0.1; 16]).is_err(),
            "per unit, not per patch"
        );
        assert!(m.mask_from_noise(1, &[f32::NAN; 4]).is_err());
    }

    #[test]
    fn keeps_49_whole_units_of_784_patches() {
        let m = UnitMasking::new(0.75, (28, 28), 2).unwrap();
        let mb = m.sample(2, &mut StdRng::seed_from_u64(0));
        assert_eq!(mb.len_keep, 196);
        for b in 0..2 {
            let mask = &mb.mask[b * 784..(b + 1) * 784];
            assert_eq!(mask.iter().filter(|&&v| v == 0.0).count(), 196);
            // every 2x2 unit is all kept or all removed
            for uy in 0..14 {
                for ux in 0..14 {
                    let v: Vec<f32> = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .iter()
                        .map(|(dy, dx)| mask[(2 * uy + dy) * 28 + 2 * ux + dx])
                        .collect();
                    assert!(
                        v.iter().all(|&x| x == v[0]),
                        "unit ({uy},{ux}) split: {v:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn units_emit_patches_in_dx_dy_order() {
        let m = UnitMasking::new(0.75, (28, 28), 2).unwrap();
        // unit 15 = row 1, col 1 of the 14x14 unit grid: x0 = 2, y0 = 2
        assert_eq!(
            m.shuffle_from_units(&[15]),
            vec![2 * 28 + 2, 3 * 28 + 2, 2 * 28 + 3, 3 * 28 + 3]
        );
        // a grid not divisible by the unit drops out-of-grid indices
        let m = UnitMasking::new(0.5, (3, 3), 2).unwrap();
        let all: Vec<usize> = (0..4).collect();
        let mut ids = m.shuffle_from_units(&all);
        assert_eq!(ids.len(), 9);
        ids.sort();
        assert_eq!(ids, (0..9).collect::<Vec<i64>>());
    }
}
