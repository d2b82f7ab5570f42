//! Requests an agent serves and what it answers.
use runtime::ContainerSpec;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, SocketAddr};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Hello,
    /// Build the container here and start it.
    Run {
        spec: ContainerSpec,
    },
    Ps,
    Inspect {
        name: String,
    },
    /// Stop the container and forget it, with its netns and images.
    Remove {
        name: String,
    },
    /// Build the bundle and an unplugged netns, ready for a restore (migration target).
    Prepare {
        spec: ContainerSpec,
    },
    /// Dump the container into image round `round`.
    Checkpoint {
        name: String,
        round: String,
        leave_running: bool,
        parent: Option<String>,
        pre_dump: bool,
    },
    /// Send image round `round` to the agent at `to` (which must be prepared for `name`).
    Push {
        name: String,
        round: String,
        to: SocketAddr,
    },
    /// Agent to agent: a tar of an image round follows, `size` bytes with this sha256.
    Receive {
        name: String,
        round: String,
        size: u64,
        sha256: String,
    },
    /// Attach the container's netns to this host's bridge with its service IP and MAC.
    Plug {
        name: String,
    },
    /// Detach it (the service IP leaves this host).
    Unplug {
        name: String,
    },
    /// Restore the container from image round `round`.
    Restore {
        name: String,
        round: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    Ok { body: serde_json::Value },
    Err { message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub host: String,
    /// CRIU version when `criu check` passes on this host.
    pub criu: Option<String>,
    /// Why CRIU is unusable here, when it is.
    pub criu_error: Option<String>,
    pub dirty_tracking: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerInfo {
    pub name: String,
    pub host: String,
    pub service_ip: Ipv4Addr,
    pub flavor: String,
    /// running, stopped, paused, checkpointed, prepared
    pub state: String,
    pub pid: Option<i64>,
}

/// What an operation cost, timed by the agent that did it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct OpStats {
    pub ms: f64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inspect {
    pub info: ContainerInfo,
    pub spec: ContainerSpec,
    pub rootfs_digest: String,
}
