//! The corehop agent daemon: one per host (its API, wire types and client are in
//! crates/agent-api, re-exported here for the daemon's own use).
pub mod delta;
pub mod master;
pub mod server;

pub use agent_api::{api, client, tls, wire, Client};
