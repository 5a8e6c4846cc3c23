//! Every preset of every method is typed code (`MaeConfig::base()`, ...); this pins what each
//! builds: (trainable, frozen) parameter counts. MAE's base/large/huge, ConvMAE-B, MFF-B and
//! LSMAE-B are the official models' published or computed counts (numerics §1.2, §3.2, §4.1,
//! §5.3); the others pin pixmim's own presets so that none changes unnoticed.
use pixmim::registry::{compose, methods, Request};

const COUNTS: &[(&str, &str, usize, usize)] = &[
    ("convmae", "base", 114_790_528, 250_880),
    ("convmae", "tiny", 431_552, 2_560),
    ("lsmae", "base", 100_435_200, 904_320),
    ("lsmae", "large", 329_239_296, 1_205_760),
    ("lsmae", "tiny", 2_217_264, 82_240),
    ("mae", "base", 111_655_680, 252_160),
    ("mae", "huge", 656_613_964, 460_544),
    ("mae", "large", 329_239_296, 302_592),
    ("mae", "mm", 111_655_680, 252_160),
    ("mae", "tiny", 2_217_264, 20_800),
    ("mff", "base", 114_608_646, 252_160),
    ("mff", "tiny", 2_291_379, 20_800),
];

#[test]
fn every_preset_builds_the_model_it_names() {
    let mut seen = Vec::new();
    for m in methods() {
        for preset in m.presets() {
            let c = compose(&Request {
                method: m.name().into(),
                preset: Some(preset.to_string()),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{} {preset}: {e}", m.name()));
            let (trainable, frozen) = c.count_params().unwrap();
            let want = COUNTS
                .iter()
                .find(|(mm, p, ..)| *mm == m.name() && p == preset)
                .unwrap_or_else(|| panic!("no pinned count for {} {preset}", m.name()));
            assert_eq!(
                (trainable, frozen),
                (want.2, want.3),
                "{} {preset}",
                m.name()
            );
            seen.push((m.name(), *preset));
        }
    }
    assert_eq!(seen.len(), COUNTS.len(), "a pinned preset no longer exists");
}
