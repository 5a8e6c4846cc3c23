//! Building blocks shared by every method: written once, here.
pub mod activation;
pub mod linear;
pub mod patch_embed;
pub mod pos_embed;
pub mod precision;
pub mod vit;
pub mod vmath;

pub use linear::LinearRows;
pub use patch_embed::PatchEmbed;
pub use pos_embed::{add_position, sincos_2d, PosEmbedOrientation};
pub use precision::Precision;
pub use vit::{Block, BlockConfig, HeadLayout};
