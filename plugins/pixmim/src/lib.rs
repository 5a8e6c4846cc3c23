//! PixMIM (Liu et al., 2023; mmselfsup 1.x) as a plugin: it swaps exactly two parts of any
//! method (numerics §2, §2.4): the augmentation becomes the Simple Resized Crop (a core
//! component, `pixmim_core::augment::simple_resized_crop`, since MFF trains with it too) and
//! the target becomes the low-frequency image. Model, masking, norm_pix, loss, optimiser and schedule stay
//! the method's own.
pub mod adaptive_lowpass;
pub mod lowpass;
pub mod lowpass_device;

use pixmim_core::recipe::Component;
use pixmim_core::registry::{Plugin, PluginRegistration};
use pixmim_core::Result;

pub use adaptive_lowpass::AdaptiveLowPass;
pub use lowpass::{Band, FrequencyTarget, LowPassFilter};
pub use lowpass_device::LowPassOnDevice;
pub use pixmim_core::augment::{SimpleResizedCrop, SrcParams};

pub struct PixMim;

impl Plugin for PixMim {
    fn name(&self) -> &'static str {
        "pixmim"
    }
    fn description(&self) -> &'static str {
        "PixMIM: Simple Resized Crop + low-pass (r=40 at 224) target (Liu et al. 2023; mmselfsup)"
    }
    fn apply(&self, cfg: &mut toml::Table) -> Result<()> {
        // Whole sections are replaced: SRC's keys are not RRC's. The radius is left unset so
        // that it scales with the image (numerics §11.1) unless the user sets target.radius.
        let src = Component::new("src", &SrcParams::pixmim());
        cfg.insert("augmentation".into(), src.to_table().into());
        cfg.insert(
            "target".into(),
            Component::named("lowpass").to_table().into(),
        );
        Ok(())
    }
}

inventory::submit! { PluginRegistration(&PixMim) }
