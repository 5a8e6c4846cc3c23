//! AdamW with the references' no-decay sets, LARS for the linear probe, and the
//! learning-rate schedules.
pub mod adamw;
pub mod lars;
pub mod schedule;

pub use adamw::AdamW;
pub use lars::Lars;
pub use schedule::LrSchedule;
