//! Shared by the integration tests: they drive the real `corehop` binary against a real
//! lab (network namespaces, agents, runc, CRIU), so they need root and run one at a time.
#![allow(dead_code)]
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

pub const BIN: &str = env!("CARGO_BIN_EXE_corehop");

static LAB: Mutex<()> = Mutex::new(());

/// Serialises tests in one binary and tears the lab down when dropped, also on failure.
pub struct Lab {
    _guard: MutexGuard<'static, ()>,
}

impl Lab {
    pub fn up() -> Lab {
        let guard = LAB.lock().unwrap_or_else(|p| p.into_inner());
        ok(&["lab", "down"]);
        ok(&["lab", "up"]);
        Lab { _guard: guard }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = corehop(&["lab", "down"]);
    }
}

pub fn corehop(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("cannot run corehop")
}

/// Runs corehop and returns stdout; panics with stderr when it fails.
pub fn ok(args: &[&str]) -> String {
    let o = corehop(args);
    assert!(
        o.status.success(),
        "corehop {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs corehop expecting failure; returns stderr.
pub fn fails(args: &[&str]) -> String {
    let o = corehop(args);
    assert!(
        !o.status.success(),
        "corehop {args:?} should have failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// corehop run inside a lab host's namespace (a client on another host).
pub fn on_host(host: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &format!("ch-{host}"), BIN])
        .args(args);
    c
}

pub fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}
