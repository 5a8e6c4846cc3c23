//! Every random draw of a run is keyed by (seed, purpose, index), so a run is a pure function
//! of its seed and step: this is what makes resume exact without storing RNG state.
use rand::rngs::StdRng;
use rand::SeedableRng;

/// splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    Init = 1,
    Shuffle = 2,
    Augment = 3,
    Mask = 4,
    /// Mixup / CutMix draws of a fine-tuning batch.
    Mixup = 5,
    /// A common corruption of an evaluation image (`robustness`).
    Corruption = 6,
    /// The texture partner of a cue-conflict image (`shape_bias`).
    CueConflict = 7,
    /// The order of a dataset packed into shards (`pack`).
    Pack = 8,
}

pub fn rng(seed: u64, purpose: Purpose, index: u64) -> StdRng {
    StdRng::seed_from_u64(mix(mix(seed ^ mix(purpose as u64)) ^ index))
}

pub fn derive(seed: u64, purpose: Purpose, index: u64) -> u64 {
    mix(mix(seed ^ mix(purpose as u64)) ^ index)
}
