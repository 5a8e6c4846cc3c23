//! MFF, "Improving Pixel-based MIM by Reducing Wasted Modeling Capability" (mmpretrain `MFF`,
//! numerics §4): MAE whose latent is a learned softmax fusion of shallow and deep encoder layers.
pub mod model;
pub mod presets;

use std::marker::PhantomData;

use pixmim_core::method_def::MethodDef;
use pixmim_core::state_dict::OfficialLayout;

pub use model::{Mff, MffConfig};

/// The method this crate defines; the `pixmim` facade registers it (and compiles the
/// generic engine for its model there, once per model type).
pub static METHOD: MethodDef<MffConfig> = MethodDef {
    name: "mff",
    description: "Multi-level feature fusion MAE: softmax fusion of layers {0,2,4,6,8,11} (Liu et al. 2023; mmpretrain)",
    presets: presets::PRESETS,
    recipe: presets::recipe,
    // mmpretrain's `MFFViT` is MAE's backbone with `proj_layers` / `proj_weights` beside its
    // blocks; pixmim nests the MAE model as the `mae` field.
    official_layout: OfficialLayout {
        renames: &[("mae.", "")],
        ..OfficialLayout::PLAIN
    },
    model: PhantomData,
};
