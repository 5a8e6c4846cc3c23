//! AdamW with the references' no-decay sets, and their learning-rate schedules.
pub mod adamw;
pub mod schedule;

pub use adamw::AdamW;
pub use schedule::LrSchedule;
