//! The raw-pixel target (MAE): the normalised input itself. Plugins register others
//! (PixMIM's low-pass target lives in `plugins/pixmim`).
use crate::error::Result;
use crate::registry::{Geometry, TargetRegistration};
use crate::traits::{ImageBatch, TargetGenerator};

pub struct PixelTarget;

impl TargetGenerator for PixelTarget {
    fn describe(&self) -> String {
        "raw pixels (the normalised input)".into()
    }
    fn generate(&self, _images: &ImageBatch) -> Option<ImageBatch> {
        None
    }
}

fn build_pixel(params: &toml::Table, _g: &Geometry) -> Result<Box<dyn TargetGenerator>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoParams {}
    let _: NoParams = crate::config::parse_params(params, "target")?;
    Ok(Box::new(PixelTarget))
}

inventory::submit! {
    TargetRegistration {
        name: "pixel",
        description: "raw normalised pixels (MAE)",
        params: &[],
        build: build_pixel,
    }
}
