//! How functions run on a host: OCI bundles started by runc, checkpointed and restored by
//! CRIU over its RPC.
pub mod bundle;
pub mod containers;
pub mod criu_rpc;
pub mod criu_stats;
pub mod flavor;
pub mod runc;
pub mod sgi;
pub mod sockets;
pub mod tun;
pub mod writable;

pub use bundle::ContainerSpec;
pub use flavor::{flavor, Flavor};
