//! Checkpoint key layouts. pixmim's own names are the official repos' (facebookresearch/mae,
//! ConvMAE, long_seq_mae); mmselfsup / mmpretrain (PixMIM, MFF, their MAE) nest the encoder
//! under `backbone.` and the decoder under `neck.` with mmcv block names (numerics §0.9); timm's
//! VisionTransformer is the official encoder alone.
use crate::checkpoint::HostTensor;

/// Block-internal renames, official -> mm (numerics §0.9).
const BLOCK: &[(&str, &str)] = &[
    ("norm1.", "ln1."),
    ("norm2.", "ln2."),
    ("mlp.fc1.", "ffn.layers.0.0."),
    ("mlp.fc2.", "ffn.layers.1."),
];

/// Top-level renames, official -> mm; the first matching prefix wins.
const TOP: &[(&str, &str)] = &[
    ("patch_embed.proj.", "backbone.patch_embed.projection."),
    ("blocks.", "backbone.layers."),
    ("norm.", "backbone.ln1."),
    ("decoder_blocks.", "neck.decoder_blocks."),
    ("decoder_norm.", "neck.ln1."),
    ("decoder_embed.", "neck.decoder_embed."),
    ("decoder_pred.", "neck.decoder_pred."),
    ("decoder_pos_embed", "neck.decoder_pos_embed"),
    ("mask_token", "neck.mask_token"),
];

/// Keys mm checkpoints carry that are not model parameters (PixMIM's filter buffer).
pub const MM_BUFFERS: &[&str] = &["target_generator."];

fn split_block(rest: &str) -> Option<(&str, &str)> {
    let dot = rest.find('.')?;
    let (idx, tail) = rest.split_at(dot + 1);
    idx[..dot].parse::<usize>().ok()?;
    Some((idx, tail))
}

fn map_block_tail(tail: &str, to_mm: bool) -> String {
    for (o, m) in BLOCK {
        let (from, to) = if to_mm { (o, m) } else { (m, o) };
        if let Some(r) = tail.strip_prefix(from) {
            return format!("{to}{r}");
        }
    }
    tail.to_string()
}

fn rename(name: &str, to_mm: bool) -> String {
    for (o, m) in TOP {
        let (from, to) = if to_mm { (o, m) } else { (m, o) };
        if let Some(rest) = name.strip_prefix(from) {
            if from.ends_with("blocks.") || from.ends_with("layers.") {
                if let Some((idx, tail)) = split_block(rest) {
                    return format!("{to}{idx}{}", map_block_tail(tail, to_mm));
                }
            }
            return format!("{to}{rest}");
        }
    }
    // Everything else of the encoder (cls_token, pos_embed, MFF's proj_layers/proj_weights)
    // sits under `backbone.` unchanged.
    if to_mm {
        format!("backbone.{name}")
    } else {
        name.strip_prefix("backbone.").unwrap_or(name).to_string()
    }
}

/// Official name -> mmselfsup / mmpretrain name.
pub fn official_to_mm(name: &str) -> String {
    rename(name, true)
}

/// Official encoder name -> mmsegmentation's, as its `beit2mmseg.py` converter renames the
/// official MAE encoder: `blocks` -> `layers` with `norm` -> `ln`, `mlp.fc1` -> `ffn.layers.0.0`
/// and `mlp.fc2` -> `ffn.layers.1` inside them, `patch_embed.proj` -> `patch_embed.projection`,
/// all under `backbone.` (the final `norm` keeps its name, unlike mmselfsup's `ln1`).
pub fn official_to_mmseg(name: &str) -> String {
    let renamed = match name.strip_prefix("blocks.").and_then(split_block) {
        Some((idx, tail)) => format!("layers.{idx}{}", map_block_tail(tail, true)),
        None => match name.strip_prefix("patch_embed.proj.") {
            Some(rest) => format!("patch_embed.projection.{rest}"),
            None => name.to_string(),
        },
    };
    format!("backbone.{renamed}")
}

/// mmselfsup / mmpretrain name -> official name; `None` for buffers that are not parameters.
pub fn mm_to_official(name: &str) -> Option<String> {
    if MM_BUFFERS.iter().any(|b| name.starts_with(b)) {
        return None;
    }
    Some(rename(name, false))
}

/// The decoder's parameters in the official MAE family's state dicts (MAE, ConvMAE, LSMAE,
/// MFF's official names): `decoder_*` and `mask_token`.
pub const MAE_DECODER: &[&str] = &["decoder_", "mask_token"];

/// Where a method's official state dict differs from pixmim's checkpoint, which keeps the
/// official names wherever its modules allow. Each method crate declares its own
/// (`Method::official_layout`); interop only applies it, both ways.
#[derive(Clone, Copy)]
pub struct OfficialLayout {
    /// (pixmim prefix, official prefix), the first match wins: MFF nests the MAE model as
    /// `mae.`; ConvMAE's stage output convolutions are `stageN_output_decode.proj.` here.
    pub renames: &'static [(&'static str, &'static str)],
    /// Official names of 1x1 `Conv2d` weights, (out, in, 1, 1) there, that pixmim computes as
    /// Linear layers over channels: (out, in) in its checkpoints.
    pub conv1x1: fn(&str) -> bool,
    /// Prefixes of the official names of the decoder's parameters; the rest is the encoder
    /// (what timm's VisionTransformer holds, and what an encoder-only file may leave out).
    pub decoder: &'static [&'static str],
    /// Whether `export --to mmseg` renames the encoder as mmsegmentation's `beit2mmseg.py`
    /// does (a plain ViT, which mmseg's `MAE` backbone loads). ConvMAE's segmentation code
    /// (its `SEG/backbone/convmae.py`) loads the official names as they are.
    pub mmseg_renames: bool,
}

impl OfficialLayout {
    /// Names and shapes as pixmim's.
    pub const PLAIN: OfficialLayout = OfficialLayout {
        renames: &[],
        conv1x1: |_| false,
        decoder: MAE_DECODER,
        mmseg_renames: true,
    };

    /// Whether official name `name` belongs to the encoder.
    pub fn is_encoder_key(&self, name: &str) -> bool {
        !self.decoder.iter().any(|p| name.starts_with(p))
    }

    /// pixmim name -> official name. (Not invertible by name alone: MFF's own `proj_layers`
    /// sit beside its `mae.` ones, so loading goes from the model's names.)
    pub fn official_name(&self, ours: &str) -> String {
        for (from, to) in self.renames {
            if let Some(rest) = ours.strip_prefix(from) {
                return format!("{to}{rest}");
            }
        }
        ours.to_string()
    }

    /// One pixmim tensor as the official code stores it.
    pub fn to_official(&self, ours: &str, mut t: HostTensor) -> (String, HostTensor) {
        let name = self.official_name(ours);
        if (self.conv1x1)(&name) && t.shape.len() == 2 {
            t.shape.extend([1, 1]);
        }
        (name, t)
    }

    /// The official tensor `official` in pixmim's shape; a shape that does not fit is left
    /// as it is, for the loader to report against the model's.
    pub fn to_pixmim(&self, official: &str, mut t: HostTensor) -> HostTensor {
        if (self.conv1x1)(official) && t.shape.len() == 4 && t.shape[2..] == [1, 1] {
            t.shape.truncate(2);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mm_names_follow_spec_0_9_and_invert() {
        let pairs = [
            (
                "patch_embed.proj.weight",
                "backbone.patch_embed.projection.weight",
            ),
            ("cls_token", "backbone.cls_token"),
            ("pos_embed", "backbone.pos_embed"),
            ("blocks.11.norm1.weight", "backbone.layers.11.ln1.weight"),
            ("blocks.0.norm2.bias", "backbone.layers.0.ln2.bias"),
            (
                "blocks.3.attn.qkv.weight",
                "backbone.layers.3.attn.qkv.weight",
            ),
            (
                "blocks.3.attn.proj.bias",
                "backbone.layers.3.attn.proj.bias",
            ),
            (
                "blocks.2.mlp.fc1.weight",
                "backbone.layers.2.ffn.layers.0.0.weight",
            ),
            (
                "blocks.2.mlp.fc2.bias",
                "backbone.layers.2.ffn.layers.1.bias",
            ),
            ("norm.weight", "backbone.ln1.weight"),
            ("mask_token", "neck.mask_token"),
            ("decoder_embed.weight", "neck.decoder_embed.weight"),
            ("decoder_pos_embed", "neck.decoder_pos_embed"),
            (
                "decoder_blocks.7.mlp.fc1.bias",
                "neck.decoder_blocks.7.ffn.layers.0.0.bias",
            ),
            ("decoder_norm.bias", "neck.ln1.bias"),
            ("decoder_pred.weight", "neck.decoder_pred.weight"),
            ("proj_layers.0.weight", "backbone.proj_layers.0.weight"),
            ("proj_weights", "backbone.proj_weights"),
        ];
        for (official, mm) in pairs {
            assert_eq!(official_to_mm(official), mm);
            assert_eq!(mm_to_official(mm).as_deref(), Some(official));
        }
        assert_eq!(mm_to_official("target_generator.low_pass_filter"), None);
        let plain = OfficialLayout::PLAIN;
        assert!(plain.is_encoder_key("blocks.0.attn.qkv.weight"));
        assert!(!plain.is_encoder_key("decoder_blocks.0.attn.qkv.weight"));
        assert!(!plain.is_encoder_key("mask_token"));
    }

    #[test]
    fn a_layout_renames_and_reshapes_both_ways() {
        let layout = OfficialLayout {
            renames: &[
                ("stage1_output_decode.proj.", "stage1_output_decode."),
                ("mae.", ""),
            ],
            conv1x1: |k| k.ends_with("conv1.weight"),
            ..OfficialLayout::PLAIN
        };
        let t = |shape: &[usize]| HostTensor {
            shape: shape.to_vec(),
            data: vec![0.5; shape.iter().product()],
        };
        let (n, o) = layout.to_official("blocks1.0.conv1.weight", t(&[8, 4]));
        assert_eq!(
            (n.as_str(), o.shape.as_slice()),
            ("blocks1.0.conv1.weight", &[8, 4, 1, 1][..])
        );
        assert_eq!(layout.to_pixmim(&n, o).shape, vec![8, 4]);
        assert_eq!(
            layout.official_name("stage1_output_decode.proj.bias"),
            "stage1_output_decode.bias"
        );
        assert_eq!(
            layout.official_name("mae.blocks.0.norm1.weight"),
            "blocks.0.norm1.weight"
        );
        assert_eq!(layout.official_name("proj_weights"), "proj_weights");
        // A conv weight of the wrong rank stays as it is, for the loader to report.
        let odd = layout.to_pixmim("blocks1.0.conv1.weight", t(&[8, 4, 3, 3]));
        assert_eq!(odd.shape, vec![8, 4, 3, 3]);
    }
}
