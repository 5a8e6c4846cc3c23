//! MAE (He et al., 2022) as the official `facebookresearch/mae` code does it (numerics §1).
//!
//! `model.rs` is the network, `presets.rs` the recipes; this file defines the method (`METHOD`,
//! which the `pixmim` facade registers).
pub mod model;
pub mod presets;

use std::marker::PhantomData;

use pixmim_core::method_def::MethodDef;
use pixmim_core::state_dict::OfficialLayout;

pub use model::{Mae, MaeConfig};

/// The method this crate defines; the `pixmim` facade registers it (and compiles the
/// generic engine for its model there, once per model type).
pub static METHOD: MethodDef<MaeConfig> = MethodDef {
    name: "mae",
    description:
        "Masked Autoencoder, ViT encoder + light decoder (He et al. 2022; facebookresearch/mae)",
    presets: presets::PRESETS,
    recipe: presets::recipe,
    official_layout: OfficialLayout::PLAIN,
    model: PhantomData,
};
