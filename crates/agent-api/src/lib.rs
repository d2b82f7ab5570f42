//! What the controller needs to drive agents: the requests and answers of their API, the
//! authenticated framing, and the client. The daemon (crates/agent) serves the same types.
pub mod api;
pub mod client;
pub mod tls;
pub mod wire;

pub use client::Client;
