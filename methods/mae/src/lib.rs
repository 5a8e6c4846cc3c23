//! MAE (He et al., 2022) as the official `facebookresearch/mae` code does it (numerics §1).
//!
//! `model.rs` is the network, `presets.rs` the recipes; this file registers the method.
pub mod model;
pub mod presets;

use std::marker::PhantomData;

use pixmim_core::interop::OfficialLayout;
use pixmim_core::method_def::MethodDef;
use pixmim_core::registry::MethodRegistration;

pub use model::{Mae, MaeConfig};

pub static MAE: MethodDef<MaeConfig> = MethodDef {
    name: "mae",
    description:
        "Masked Autoencoder, ViT encoder + light decoder (He et al. 2022; facebookresearch/mae)",
    presets: presets::PRESETS,
    recipe: presets::recipe,
    official_layout: OfficialLayout::PLAIN,
    model: PhantomData,
};

pixmim_core::inventory::submit! { MethodRegistration(&MAE) }
