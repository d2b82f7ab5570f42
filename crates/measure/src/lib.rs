//! Measurement from the user's side of a migration.
pub mod app;
pub mod execs;
pub mod gaps;
pub mod probe;
pub mod wire;
