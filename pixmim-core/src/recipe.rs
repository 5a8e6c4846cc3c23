//! Presets as typed code. A [`Recipe`] is a whole run config (seed, model, the three
//! components, optimiser, schedule, training) that the compiler checks; a method's preset is
//! one, serialised to the first TOML layer of a run, under plugins, `--config` and `--set`.
use serde::Serialize;
use toml::Table;

use crate::config::{OptimConfig, ScheduleConfig, TrainConfig};

/// A registered component by name with its parameters: what `[augmentation]`, `[masking]`
/// and `[target]` hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    pub name: &'static str,
    pub params: Table,
}

impl Component {
    /// `name` with the component's own typed parameters.
    pub fn new(name: &'static str, params: &impl Serialize) -> Self {
        Self {
            name,
            params: Table::try_from(params).expect("component parameters are a TOML table"),
        }
    }

    /// A component that takes no parameters.
    pub fn named(name: &'static str) -> Self {
        Self {
            name,
            params: Table::new(),
        }
    }

    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        t.insert("name".into(), self.name.into());
        t.extend(self.params.clone());
        t
    }
}

/// A run recipe over a method's model config `M`.
#[derive(Clone, Debug)]
pub struct Recipe<M> {
    pub seed: u64,
    pub model: M,
    pub augmentation: Component,
    pub masking: Component,
    pub target: Component,
    pub optim: OptimConfig,
    pub schedule: ScheduleConfig,
    pub train: TrainConfig,
}

impl<M> Recipe<M> {
    /// The same recipe around another model (ConvMAE's network in MAE's recipe).
    pub fn with_model<N>(self, model: N) -> Recipe<N> {
        Recipe {
            seed: self.seed,
            model,
            augmentation: self.augmentation,
            masking: self.masking,
            target: self.target,
            optim: self.optim,
            schedule: self.schedule,
            train: self.train,
        }
    }
}

impl<M: Serialize> Recipe<M> {
    /// The recipe as a run-config table.
    pub fn to_table(&self) -> Table {
        let mut t = Table::new();
        t.insert("seed".into(), (self.seed as i64).into());
        t.insert("model".into(), section(&self.model).into());
        t.insert("augmentation".into(), self.augmentation.to_table().into());
        t.insert("masking".into(), self.masking.to_table().into());
        t.insert("target".into(), self.target.to_table().into());
        t.insert("optim".into(), section(&self.optim).into());
        t.insert("schedule".into(), section(&self.schedule).into());
        t.insert("train".into(), section(&self.train).into());
        t
    }
}

/// A config section (a struct of plain values) as a table.
fn section(v: &impl Serialize) -> Table {
    Table::try_from(v).expect("a config section is a TOML table")
}
