//! Every preset of every registered method is typed code (`MaeConfig::base()`, ...) and
//! declares the (trainable, frozen) parameter counts of the network it builds (each method
//! crate's `presets::PRESETS`: the official models' published or computed counts where a
//! preset is an official model). This builds each and checks the declaration.
use pixmim::registry::{compose, methods, Request};

#[test]
fn every_preset_builds_the_parameter_counts_its_method_declares() {
    let mut checked = 0;
    for m in methods() {
        assert!(!m.presets().is_empty(), "{} declares no preset", m.name());
        for p in m.presets() {
            let c = compose(&Request {
                method: m.name().into(),
                preset: Some(p.name.into()),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{} {}: {e}", m.name(), p.name));
            assert_eq!(
                c.count_params().unwrap(),
                (p.trainable, p.frozen),
                "{} {}: (trainable, frozen) built vs declared",
                m.name(),
                p.name
            );
            checked += 1;
        }
    }
    assert!(checked >= methods().len(), "{checked} presets checked");
}
