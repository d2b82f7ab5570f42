//! Running system tools (iproute2, tc, runc, criu) with errors that name the command and
//! its stderr. We drive iproute2 rather than speaking netlink ourselves: every step can
//! then be reproduced by hand from the debug log, which is what lab users debug with.
use anyhow::{bail, Context, Result};
use std::process::{Command, Output, Stdio};

/// Runs `prog args...`, returning stdout; a non-zero exit is an error carrying stderr.
pub fn run(prog: &str, args: &[&str]) -> Result<String> {
    let out = output(prog, args)?;
    if !out.status.success() {
        bail!(
            "`{} {}` failed ({}): {}",
            prog,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command whose failure is expected in some states (deleting what may be gone).
pub fn run_quiet(prog: &str, args: &[&str]) -> bool {
    output(prog, args)
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn output(prog: &str, args: &[&str]) -> Result<Output> {
    tracing::debug!("exec: {} {}", prog, args.join(" "));
    Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{prog}` (is it installed? run `make setup`)"))
}

/// `ip netns exec NS prog args...`
pub fn in_netns(ns: &str, prog: &str, args: &[&str]) -> Result<String> {
    let mut all = vec!["netns", "exec", ns, prog];
    all.extend_from_slice(args);
    run("ip", &all)
}
