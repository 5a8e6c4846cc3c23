//! What a registered component is: an augmentation, corruption (masking) or target generator
//! registered by name with its constructor, and the [`Geometry`] it is built for. Below the
//! registry, which composes runs from them, so that components need not import it.
use toml::Table;

use crate::error::{Error, Result};
use crate::traits::{Augmentation, Corruption, TargetGenerator};

/// What the data pipeline needs to know about a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Input image (height, width).
    pub image: (usize, usize),
    /// Mask grid (rows, cols): one mask decision per cell.
    pub mask_grid: (usize, usize),
}

/// The largest image side a run may ask for. Pretraining uses 224-448 and dense fine-tuning
/// up to 1024; far beyond that a typo (an extra zero) would allocate gigabytes per image in
/// the targets and position embeddings before anything could say so.
pub const MAX_IMAGE_SIDE: usize = 4096;

impl Geometry {
    /// A square image of side `image` with a `grid` x `grid` mask.
    pub fn square(image: usize, grid: usize) -> Self {
        Self {
            image: (image, image),
            mask_grid: (grid, grid),
        }
    }

    pub fn check_size(&self) -> Result<()> {
        let (h, w) = self.image;
        if h > MAX_IMAGE_SIDE || w > MAX_IMAGE_SIDE {
            return Err(Error::config(
                "model.img_size",
                format!("{h}x{w} is larger than pixmim supports ({MAX_IMAGE_SIDE} per side)"),
            ));
        }
        Ok(())
    }
}

/// A registered component constructor: `build(params, geometry)`.
pub struct ComponentRegistration<T: ?Sized + 'static> {
    pub name: &'static str,
    pub description: &'static str,
    /// The keys `build` takes besides `name`: a later config layer that switches to this
    /// component drops the earlier layers' other keys ([`crate::registry::compose`]).
    pub params: &'static [&'static str],
    pub build: fn(&Table, &Geometry) -> Result<Box<T>>,
}
pub type AugmentationRegistration = ComponentRegistration<dyn Augmentation>;
pub type CorruptionRegistration = ComponentRegistration<dyn Corruption>;
pub type TargetRegistration = ComponentRegistration<dyn TargetGenerator>;

inventory::collect!(AugmentationRegistration);
inventory::collect!(CorruptionRegistration);
inventory::collect!(TargetRegistration);
