//! ConvMAE / MCMAE (Alpha-VL/ConvMAE, numerics §3): a hybrid conv-transformer encoder whose two
//! convolution stages see the mask through masked depthwise convolutions, with multi-scale
//! fusion of the stage outputs; MAE's decoder, target and loss.
pub mod cblock;
pub mod model;
pub mod presets;

use std::marker::PhantomData;

use pixmim_core::method_def::MethodDef;
use pixmim_core::state_dict::OfficialLayout;

pub use model::{ConvMae, ConvMaeConfig};

/// The method this crate defines; the `pixmim` facade registers it (and compiles the
/// generic engine for its model there, once per model type).
pub static METHOD: MethodDef<ConvMaeConfig> = MethodDef {
    name: "convmae",
    description: "ConvMAE: conv 256x2, conv 384x2, ViT 768x11, block-wise masking, multi-scale fusion (Gao et al. 2022)",
    presets: presets::PRESETS,
    recipe: presets::recipe,
    official_layout: OFFICIAL_LAYOUT,
    model: PhantomData,
};

/// `models_convmae.py`: the stage output convolutions are bare `nn.Conv2d`s, and the conv
/// blocks' 1x1 convolutions (`conv1`, `conv2`, `mlp.fc1`, `mlp.fc2` of `blocks1`/`blocks2`)
/// are Linear layers over channels here (cblock.rs says why). ConvMAE's detection and
/// segmentation code (`DET/models/convmae.py`, `SEG/backbone/convmae.py`) load these official
/// names, `strict=False`: `--to detectron2` and `--to mmseg` write them unrenamed.
const OFFICIAL_LAYOUT: OfficialLayout = OfficialLayout {
    renames: &[
        ("stage1_output_decode.proj.", "stage1_output_decode."),
        ("stage2_output_decode.proj.", "stage2_output_decode."),
    ],
    conv1x1: |k| {
        (k.starts_with("blocks1.") || k.starts_with("blocks2."))
            && [
                ".conv1.weight",
                ".conv2.weight",
                ".mlp.fc1.weight",
                ".mlp.fc2.weight",
            ]
            .iter()
            .any(|s| k.ends_with(s))
    },
    mmseg_renames: false,
    ..OfficialLayout::PLAIN
};
