//! LSMAE, "Exploring Long-Sequence Masked Autoencoders" (facebookresearch/long_seq_mae, numerics §5):
//! MAE's network at 448 px (784 patches) with a 384-wide decoder, and the mask decoupled from
//! the patch: one decision per 2x2-patch unit, drawn in the data workers.
pub mod presets;

use std::marker::PhantomData;

use pixmim_core::method_def::MethodDef;
use pixmim_core::state_dict::OfficialLayout;
use pixmim_mae::MaeConfig;

pub use pixmim_core::masking::UnitMasking;

/// The method this crate defines; the `pixmim` facade registers it (and compiles the
/// generic engine for its model there, once per model type). The model is MAE's (numerics
/// §5.3); masking is what differs.
pub static METHOD: MethodDef<MaeConfig> = MethodDef {
    name: "lsmae",
    description:
        "Long-sequence MAE: 448 px, 2x2-patch mask units, 384-wide decoder (Hu et al. 2022)",
    presets: presets::PRESETS,
    recipe: presets::recipe,
    official_layout: OfficialLayout::PLAIN,
    model: PhantomData,
};
