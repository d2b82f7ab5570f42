//! A guest that is itself a corehop lab machine: `corehop lab up`, `run` and `migrate`
//! work inside it as on the host (network namespaces, runc, CRIU). What it is for: the
//! guest kernel (Debian's) tracks dirty pages (soft-dirty), which a host kernel may lack,
//! so real CRIU pre-dumps can run there.
use crate::image::GuestSetup;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The host tools the lab, the agents and runc run by name, besides corehop itself
/// (`ldd` lists a container program's libraries for its rootfs; CRIU locks a dumped
/// container's TCP connections with `ip(6)tables-restore` and packs its tmpfs with GNU
/// `tar`, whose options busybox's lacks).
const TOOLS: &[&str] = &[
    "criu",
    "tar",
    "runc",
    "ip",
    "bridge",
    "tc",
    "nft",
    "sysctl",
    "ldd",
    "iptables-restore",
    "ip6tables-restore",
    // The NFQUEUE rule that holds a migration target's packets until its restore.
    "iptables",
    "ip6tables",
];

/// cgroup v1 hierarchies mounted one controller each, as on the lab machines (cgroupfs, no
/// systemd): runc joins every mounted one, the agents put containers under each.
const CGROUP_V1: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
];

/// PATH a lab-host guest must use: the real tools (copied at their host paths) before
/// busybox's applets of the same names (its `ip` has no `netns`, for one).
pub const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a guest needs to be a lab host running `corehop` (the host binary at that path):
/// the tools with their libraries, the lab's kernel modules (setup-vm.sh's `lab.order`), a
/// root runc can pivot from, and the cgroup mounts.
pub fn lab_host_setup(corehop: &Path) -> Result<GuestSetup> {
    if !corehop.is_absolute() || !corehop.is_file() {
        bail!("corehop binary {} not found", corehop.display());
    }
    let mut programs = vec![corehop.to_path_buf()];
    for t in TOOLS {
        let p = find_in_path(t)?;
        // A script (glibc's ldd is one) needs its interpreter at the path it names.
        if let Some(interp) = interpreter(&p) {
            programs.push(interp);
        }
        programs.push(p);
    }
    programs.extend(xtables_plugins(&find_in_path("iptables-restore")?)?);
    let mut cgroups =
        String::from("mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup && cd /sys/fs/cgroup && ");
    for c in CGROUP_V1 {
        cgroups.push_str(&format!(
            "mkdir {c} && mount -t cgroup -o {c} cgroup {c} && "
        ));
    }
    cgroups.push_str(
        "mkdir systemd unified && mount -t cgroup -o none,name=systemd cgroup systemd && \
         mount -t cgroup2 cgroup2 unified",
    );
    Ok(GuestSetup {
        programs,
        commands: vec![
            // iproute2 keeps named namespaces under /var/run/netns.
            vec!["ln".into(), "-s".into(), "/run".into(), "/var/run".into()],
            vec!["sh".into(), "-c".into(), cgroups],
        ],
        tmpfs_root: true,
        module_lists: vec!["lab.order".into()],
    })
}

/// The xtables extensions CRIU's lock rules use (`-m mark`, `-p tcp --sport`, `-j DROP`):
/// iptables loads them with dlopen, so no `ldd` lists them. They live where Debian's
/// libxtables looks, `/usr/lib/<multiarch triplet>/xtables`, the triplet being the folder
/// of libxtables itself.
fn xtables_plugins(iptables: &Path) -> Result<Vec<PathBuf>> {
    let lib = crate::image::shared_libs(iptables)?
        .into_iter()
        .find(|l| {
            l.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("libxtables."))
        })
        .with_context(|| format!("{} does not use libxtables", iptables.display()))?;
    let triplet = lib
        .parent()
        .and_then(Path::file_name)
        .with_context(|| format!("no multiarch folder in {}", lib.display()))?;
    let dir = Path::new("/usr/lib").join(triplet).join("xtables");
    ["libxt_mark.so", "libxt_standard.so", "libxt_tcp.so"]
        .iter()
        .map(|f| {
            let p = dir.join(f);
            if p.is_file() {
                Ok(p)
            } else {
                bail!("no xtables extension {}: install iptables", p.display())
            }
        })
        .collect()
}

/// The interpreter a `#!` script names on its first line.
fn interpreter(script: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 128];
    let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    let line = head[..n]
        .strip_prefix(b"#!")?
        .split(|&b| b == b'\n')
        .next()?;
    let word = String::from_utf8_lossy(line)
        .split_whitespace()
        .next()?
        .to_string();
    word.starts_with('/').then(|| PathBuf::from(word))
}

/// Where `name` is on this host's PATH, which is where a lab-host guest has it too.
pub fn find_in_path(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{name} is not on this host's PATH: run `make setup` (scripts/setup.sh)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_corehop_is_an_error() {
        let e = lab_host_setup(Path::new("/nonexistent/corehop")).unwrap_err();
        assert!(e.to_string().contains("not found"), "{e}");
        assert!(lab_host_setup(Path::new("corehop")).is_err());
    }

    #[test]
    fn a_script_brings_its_interpreter() {
        let d = std::env::temp_dir().join(format!("labhost-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for (text, want) in [
            ("#! /bin/bash\necho\n", Some("/bin/bash")),
            ("#!/bin/sh -e\n", Some("/bin/sh")),
            ("#!\n", None),
            ("#!bash\n", None),
            ("\x7fELF", None),
            ("", None),
        ] {
            let f = d.join("s");
            std::fs::write(&f, text).unwrap();
            assert_eq!(interpreter(&f), want.map(PathBuf::from), "{text:?}");
        }
        let _ = std::fs::remove_dir_all(&d);
    }
}
