//! corehop HSS network function: S6a Diameter server (TS 29.272) over TCP, EPS-AKA vectors
//! from Milenage (`aka`), subscribers and SQN counters in SQLite.
//!
//! The CLI wires `corehop nf run hss --config F` to [`serve`] and
//! `corehop hss add|list|import --db PATH` to [`Store`].

mod config;
mod server;
pub mod store;

pub use config::Config;
pub use server::{serve, Hss};
pub use store::{default_subscribers, read_csv, Registration, Store, StoreError, Subscriber};
