//! How functions run on a host: OCI bundles run by runc, checkpointed and restored by CRIU.
pub mod bundle;
pub mod criu_stats;
pub mod flavor;
pub mod runc;
pub mod sgi;

pub use bundle::ContainerSpec;
pub use flavor::{flavor, Flavor};
