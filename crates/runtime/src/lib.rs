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

/// The number after `key` on its line of a /proc text file (`TracerPid:` of a status,
/// `mnt_id:` of an fdinfo).
pub(crate) fn proc_number<T: std::str::FromStr>(path: &str, key: &str) -> Option<T> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
}
pub use flavor::{flavor, Flavor};
