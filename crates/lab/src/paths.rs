//! Where the lab keeps things. Hosts share no folders: each has its own state and run dirs.
use std::path::PathBuf;

/// Volatile lab state: the spec in use, the keys (`pki`), per-host run dirs.
pub const RUN_DIR: &str = "/run/corehop";
/// Persistent per-host state (bundles, checkpoint images).
pub const STATE_DIR: &str = "/var/lib/corehop/hosts";

pub fn lab_file() -> PathBuf {
    PathBuf::from(RUN_DIR).join("lab.json")
}
pub fn host_run_dir(host: &str) -> PathBuf {
    PathBuf::from(RUN_DIR).join("hosts").join(host)
}
pub fn host_state_dir(host: &str) -> PathBuf {
    PathBuf::from(STATE_DIR).join(host)
}
/// runc keeps one root per host, as separate machines would.
pub fn runc_root(host: &str) -> PathBuf {
    host_run_dir(host).join("runc")
}
/// Processes a host owns (its agent, VMs) leave pid files here so `lab down` finds them.
pub fn pid_dir(host: &str) -> PathBuf {
    host_run_dir(host).join("pids")
}
/// The pid file of a host's agent.
pub fn agent_pidfile(host: &str) -> PathBuf {
    pid_dir(host).join("agent.pid")
}
/// cgroup path (under every controller) of a host's containers.
pub fn cgroup_parent(host: &str) -> String {
    format!("/corehop/{host}")
}

/// Pid files of lab-wide processes (the tunnel master).
pub fn lab_pid_dir() -> PathBuf {
    PathBuf::from(RUN_DIR).join("pids")
}
