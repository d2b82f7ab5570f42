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
    /// Dump the container into image round `round`. A final or lazy dump first takes the
    /// container's link down; it stays down (the source's network lock) unless the dump fails.
    Checkpoint {
        name: String,
        round: String,
        leave_running: bool,
        parent: Option<String>,
        pre_dump: bool,
        /// PostCopy: leave memory behind, served by a CRIU page server on this port of the
        /// agent's address until the destination has pulled it all.
        #[serde(default)]
        lazy_port: Option<u16>,
    },
    /// Send image round `round` to the agent at `to` (which must be prepared for `name`);
    /// with `base`, only what differs from that earlier round, which `to` already holds.
    Push {
        name: String,
        round: String,
        to: SocketAddr,
        #[serde(default)]
        base: Option<String>,
    },
    /// Source of a migration, before anything else: record `journal` here and lease the
    /// function's migration to this connection. Refused while another controller's lease
    /// lives; answers the journal of an interrupted migration, if one waits to be settled
    /// (nothing begun), else null.
    BeginMigration {
        name: String,
        journal: Journal,
    },
    /// After a controller died: wait for what this host still does for `name`, then answer
    /// its migration's [`Journal`] (none if no migration of it began here), leased to this
    /// connection from now on.
    TakeOver {
        name: String,
    },
    /// The migration of `name` is settled (done or rolled back): its journal goes.
    EndMigration {
        name: String,
    },
    /// Open the connection to the agent at `to` that image rounds will be pushed over, so
    /// that none waits for a handshake inside the frozen window.
    Dial {
        to: SocketAddr,
    },
    /// Agent to agent: a tar of an image round follows, `size` bytes with this sha256; with
    /// `base`, a delta against that round instead (see the daemon's `delta` module), and the rebuilt
    /// round must hash to `round_sha256`. Only agent `from` may send it, signing
    /// [`image_claim`] of these fields with its key.
    Receive {
        name: String,
        round: String,
        size: u64,
        sha256: String,
        #[serde(default)]
        base: Option<String>,
        #[serde(default)]
        round_sha256: Option<String>,
        from: String,
        signature: crate::tls::Signature,
    },
    /// Bring the container's link on this host's bridge up (it was plugged, down, when the
    /// host was prepared) and announce its service IP and MAC.
    Plug {
        name: String,
    },
    /// Take its link down (the service IP leaves this host).
    Unplug {
        name: String,
    },
    /// Restore the container from image round `round`, then bring its link up; with
    /// `lazy_from`, its memory comes afterwards, on demand, from the page server there
    /// (PostCopy).
    Restore {
        name: String,
        round: String,
        #[serde(default)]
        lazy_from: Option<SocketAddr>,
        /// A recovery from an image that may be older than the function's last state: what
        /// changed since is handed over (the SPGW's tunnel list, from the tunnel master).
        #[serde(default)]
        recovery: bool,
    },
    /// Wait until a lazily restored container has all its memory; answers [`OpStats`] whose
    /// `ms` counts from the end of the restore to the last page.
    AwaitPages {
        name: String,
    },
    /// Source of a PostCopy whose memory no destination took: CRIU's page server is told
    /// to give up, so CRIU lets the frozen tasks run again here, with their link back up.
    ResumeLazy {
        name: String,
    },
    /// VM migration target: start a QEMU for `spec` waiting for the source's state; answers
    /// [`VmIncoming`].
    VmIncoming {
        spec: ContainerSpec,
        /// The source host: only its certificate may send the state.
        from: String,
    },
    /// Pre-live checks (Table 2) of the VM `name` here against a destination's offer.
    VmCheck {
        name: String,
        caps: vm::HostCaps,
    },
    /// QEMU pre-copy of the VM `name` to a waiting QEMU; answers [`vm::MigrationStats`].
    VmMigrate {
        name: String,
        uri: String,
        /// The destination host, whose certificate the stream's TLS must meet.
        to: String,
    },
    /// Wait until the incoming VM `name` runs.
    VmAwait {
        name: String,
    },
    /// Resume the VM `name` here after a migration whose destination never ran it.
    VmResume {
        name: String,
    },
}

/// A migration as its source records it for whoever must settle it if its controller dies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// Destination host.
    pub to: String,
    /// The method's name (as `corehop migrate --method` takes it).
    pub method: String,
    /// Who leads it: `pid@machine` of the controller.
    pub controller: String,
    pub started_unix_ms: u64,
}

/// What the source of an image signs: everything the destination checks the image by.
pub fn image_claim(
    name: &str,
    round: &str,
    size: u64,
    sha256: &str,
    base: Option<&str>,
    round_sha256: Option<&str>,
) -> Vec<u8> {
    // A JSON array keeps the fields apart whatever they hold.
    serde_json::json!([
        "corehop-image/1",
        name,
        round,
        size,
        sha256,
        base,
        round_sha256
    ])
    .to_string()
    .into_bytes()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmIncoming {
    pub caps: vm::HostCaps,
    /// Where it listens, as the source's QEMU must be told (`tcp:IP:PORT`).
    pub uri: String,
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
    /// running, stopped, paused, checkpointed, prepared; for a VM, QEMU's run state
    /// (running, inmigrate, postmigrate, ...)
    pub state: String,
    pub pid: Option<i64>,
    #[serde(default)]
    pub runtime: runtime::bundle::Runtime,
}

/// What an operation cost, timed by the agent that did it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OpStats {
    pub ms: f64,
    pub bytes: u64,
    /// The steps inside it, in order: the parts of a migration's frozen window.
    #[serde(default)]
    pub steps: Vec<(Step, f64)>,
    /// CRIU's own figures of a dump or a restore (its `stats-dump` / `stats-restore`).
    #[serde(default)]
    pub criu_dump: Option<runtime::criu_stats::DumpStats>,
    #[serde(default)]
    pub criu_restore: Option<runtime::criu_stats::RestoreStats>,
    /// A leave-running dump: how long the function was frozen for it.
    #[serde(default)]
    pub frozen_ms: Option<f64>,
    /// A restore: packets that arrived while the function moved, held and then delivered.
    #[serde(default)]
    pub held_packets: Option<u64>,
}

/// A step an agent times inside an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Source, before a final dump: the function's link taken down. It is the network lock:
    /// once CRIU has dumped the sockets, a peer's packet meeting none would draw a RST.
    Lock,
    /// Function hooks once CRIU has stopped the tasks, before it dumps them (the SPGW's
    /// tunnel list recorded).
    BeforeDump,
    /// CRIU's dump: it stops the tasks (ptrace), dumps and writes the images.
    Dump,
    /// After a leave-running (or failed) dump: the function's link up and its CPU quota back.
    Thaw,
    /// CRIU's restore, less the steps done at its `network-unlock` notification.
    Restore,
    /// At `network-unlock` (sockets restored, tasks not yet running): the SGi conntrack
    /// flushed, a recovery's tunnel list handed over with its adopt signal queued.
    BeforeResume,
    /// Destination, at CRIU's `network-unlock`: what arrived since the MAC moved, held
    /// in the kernel (NFQUEUE), handed to the restored sockets.
    Release,
    /// The function's link up (a destination brings it up when the MAC moves; a
    /// recovery when its sockets are restored).
    LinkUp,
    /// The gratuitous ARP that moves the service MAC on the fabric.
    Announce,
    /// After the restore: the flavor's CPU quota set again, a handed tunnel list adopted.
    AfterRestore,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Lock => "lock",
            Step::BeforeDump => "before_dump",
            Step::Dump => "dump",
            Step::Thaw => "thaw",
            Step::Restore => "restore",
            Step::BeforeResume => "before_resume",
            Step::Release => "release",
            Step::LinkUp => "link_up",
            Step::Announce => "announce",
            Step::AfterRestore => "after_restore",
        }
    }
}

/// Times the steps of one operation.
#[derive(Debug, Default)]
pub struct Steps(pub Vec<(Step, f64)>);

impl Steps {
    pub fn time<T>(
        &mut self,
        step: Step,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let t = std::time::Instant::now();
        let r = f();
        self.0.push((step, t.elapsed().as_secs_f64() * 1e3));
        r
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inspect {
    pub info: ContainerInfo,
    pub spec: ContainerSpec,
    pub rootfs_digest: String,
    /// What the running function holds that no checkpoint can carry (a kernel SCTP socket),
    /// each with its reason: a migration is refused up front.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cannot_carry: Vec<String>,
}
