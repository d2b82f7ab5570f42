//! What the TUN tests and the bench share: emulated hosts (a namespace, runc root, cgroup
//! parent and bundle each) and a container's dump and restore as an agent does them.
// Each user takes what it needs.
#![allow(dead_code)]
use runtime::containers::{CheckpointOpts, Containers, RoundDirs, WarmRestore};
use runtime::criu_rpc::Swrk;
use runtime::runc::Runc;
use runtime::tun::{self, TunDevice};
use runtime::ContainerSpec;
use std::path::{Path, PathBuf};
use std::process::Command;

/// One emulated host of container `id`: a namespace, a runc root, a cgroup parent and a
/// bundle of its own.
pub struct Host {
    pub id: String,
    pub netns: String,
    pub dir: PathBuf,
    pub containers: Containers,
    pub runc: Runc,
}

impl Host {
    pub fn new(id: &str, tag: &str, criu: &Path) -> Host {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "run as root: namespaces, runc, CRIU"
        );
        let pid = std::process::id();
        let netns = format!("tuninh-{pid}-{tag}");
        let dir = std::env::temp_dir().join(format!("corehop-tuninh-{pid}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let h = Host {
            id: id.into(),
            containers: Containers {
                root: dir.join("runc"),
                criu: criu.into(),
                cgroup_parent: format!("/corehop-tuninh-{pid}-{tag}"),
                restores_tun: tun::criu_restores_tun(criu),
                cpus: None,
            },
            runc: Runc {
                root: dir.join("runc"),
            },
            netns,
            dir,
        };
        std::fs::create_dir_all(&h.runc.root).unwrap();
        sh("ip", &["netns", "add", &h.netns]);
        sh("ip", &["-n", &h.netns, "link", "set", "lo", "up"]);
        h
    }

    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// The container's bundle and writable folder here, as an agent prepares them.
    pub fn prepare(&self, spec: &ContainerSpec) {
        let cgroup = format!("{}/{}", self.containers.cgroup_parent, self.id);
        runtime::bundle::build(spec, &self.bundle(), &self.netns_path(), &cgroup).unwrap();
        runtime::writable::mount_fresh(&self.bundle().join(runtime::bundle::WRITABLE_DIR)).unwrap();
    }

    pub fn layout(&self, spec: &ContainerSpec) -> runtime::containers::Layout {
        runtime::bundle::layout(spec, &self.bundle(), &self.netns_path())
    }

    /// A CRIU waiting to restore here, holding a file for each of `tuns`.
    pub fn warm_restore(&self, tuns: &[TunDevice]) -> WarmRestore {
        self.containers.prepare_cgroup_parents().unwrap();
        let files = tuns
            .iter()
            .map(|d| {
                tun::recreate(&self.netns, d).unwrap();
                (d.clone(), tun::open(&self.netns, d).unwrap())
            })
            .collect();
        let (log, _) = runtime::runc::log_pipe(&self.dir.join("log")).unwrap();
        self.containers
            .warm_restore(
                &self.bundle().join("rootfs"),
                &self.dir.join("criu-root"),
                &self.netns_path(),
                std::fs::File::from(std::os::fd::OwnedFd::from(log)),
                files,
            )
            .unwrap()
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.netns];
        a.extend_from_slice(args);
        sh("ip", &a)
    }

    /// Whether one ping from this namespace to `to` is answered within a second.
    pub fn pings(&self, to: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.netns, "ping", "-c1", "-W1", "-q", to])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    pub fn pid(&self) -> i64 {
        let st = self.containers.state(&self.id).expect("no container");
        assert_eq!(st.status, "running");
        st.pid
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.containers.delete(&self.id);
        runtime::containers::unmount(&self.dir.join("criu-root"));
        runtime::containers::unmount(&self.bundle().join(runtime::bundle::WRITABLE_DIR));
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        for c in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(
                c.path()
                    .join(self.containers.cgroup_parent.trim_start_matches('/')),
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn sh(prog: &str, args: &[&str]) -> String {
    let o = Command::new(prog).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Dumps the container at `src` into `images` with `swrk` (started ahead, as the agent's).
pub fn dump(src: &Host, spec: &ContainerSpec, images: &Path, swrk: Swrk) -> anyhow::Result<()> {
    let work = src.dir.join("work-dump");
    std::fs::create_dir_all(images)?;
    std::fs::create_dir_all(&work)?;
    let dirs = RoundDirs {
        images,
        work: &work,
    };
    let opts = CheckpointOpts::default();
    src.containers
        .checkpoint(&src.id, &src.layout(spec), dirs, &opts, swrk, |_| Ok(()))?;
    Ok(())
}

/// Restores the container at `dst` from `images` with `warm`; `notify` sees CRIU's
/// notifications (script, pid).
pub fn restore(
    dst: &Host,
    spec: &ContainerSpec,
    images: &Path,
    warm: WarmRestore,
    notify: impl FnMut(&str, i32) -> anyhow::Result<()>,
) -> anyhow::Result<i64> {
    let work = dst.dir.join("work-restore");
    std::fs::create_dir_all(&work)?;
    let dirs = RoundDirs {
        images,
        work: &work,
    };
    dst.containers
        .restore(&dst.id, &dst.layout(spec), dirs, false, warm, notify)
}

/// The fdinfo of `pid`'s only TUN file.
pub fn tun_fdinfo(pid: i64) -> String {
    let fds = tun::tun_fds(pid);
    assert_eq!(fds.len(), 1, "TUN files of {pid}: {fds:?}");
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fds[0])).unwrap()
}
