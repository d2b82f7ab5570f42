//! Measurement from the user's side of a migration.
pub mod probe;
