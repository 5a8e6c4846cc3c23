//! Building blocks shared by every method: written once, here.
pub mod activation;
pub mod linear;
pub mod mae_decoder;
pub mod patch_embed;
pub mod pos_embed;
pub mod precision;
pub mod vit;
pub mod vmath;

pub use linear::LinearRows;
pub use mae_decoder::{MaeDecoder, MaeDecoderConfig};
pub use patch_embed::PatchEmbed;
pub use pos_embed::{add_position, sincos_2d, PosEmbedOrientation};
pub use precision::Precision;
pub use vit::{Block, BlockConfig, HeadLayout};

/// Does `device` run on burn-flex (alone, or under autodiff / `Dispatch`)? burn 0.21 cannot
/// be asked about a backend's costs, only its name (`autodiff<dispatch<flex>>`). The layers
/// that work around burn-flex's costs ([`HeadLayout`], the GELU and softmax host path in
/// [`activation`]) ask here.
pub fn is_flex<B: burn::tensor::backend::Backend>(device: &B::Device) -> bool {
    B::name(device).contains("flex")
}
