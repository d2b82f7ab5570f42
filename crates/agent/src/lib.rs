//! The corehop agent: one per host, and the client the controller uses to drive it.
pub mod api;
pub mod client;
pub mod delta;
pub mod master;
pub mod server;
pub mod wire;

pub use client::Client;
