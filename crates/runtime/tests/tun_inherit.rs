//! A program's open TUN file survives a CRIU migration without the program's help (issue
//! 13): `tun-echo` (this crate's stand-in for OpenVPN: it creates its device and answers
//! pings through it) runs in a runc container in one private namespace, is dumped there and
//! restored into another, where runtime::tun re-made the device and CRIU handed the
//! restored task the file the runtime attached. Root only (namespaces, runc, CRIU).
//!
//! The CRIU under test is `COREHOP_CRIU`, else the installed one; it must carry
//! scripts/criu/tun-external.patch (`make setup` builds it so). An unpatched CRIU, where one
//! is found, shows the failure the patch removes.
use runtime::containers::{CheckpointOpts, Containers, RoundDirs, WarmRestore};
use runtime::runc::Runc;
use runtime::tun::{self, TunAddress, TunDevice, TunRoute};
use runtime::ContainerSpec;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ID: &str = "tunecho";
const DEV: &str = "tun0";

/// One emulated host: a namespace, a runc root, a cgroup parent and a bundle of its own.
struct Host {
    netns: String,
    dir: PathBuf,
    containers: Containers,
    runc: Runc,
}

impl Host {
    fn new(tag: &str, criu: &Path) -> Host {
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
            containers: Containers {
                root: dir.join("runc"),
                criu: criu.into(),
                cgroup_parent: format!("/corehop-tuninh-{pid}-{tag}"),
                restores_tun: tun::criu_restores_tun(criu),
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

    fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }

    fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// The container's bundle and writable folder here, as an agent prepares them.
    fn prepare(&self, spec: &ContainerSpec) {
        let cgroup = format!("{}/{ID}", self.containers.cgroup_parent);
        runtime::bundle::build(spec, &self.bundle(), &self.netns_path(), &cgroup).unwrap();
        runtime::writable::mount_fresh(&self.bundle().join(runtime::bundle::WRITABLE_DIR)).unwrap();
    }

    fn layout(&self, spec: &ContainerSpec) -> runtime::containers::Layout {
        runtime::bundle::layout(spec, &self.bundle(), &self.netns_path())
    }

    /// A CRIU waiting to restore here, holding a file for each of `tuns`.
    fn warm_restore(&self, tuns: &[TunDevice]) -> WarmRestore {
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

    fn ip(&self, args: &[&str]) -> String {
        let mut a = vec!["-n", &self.netns];
        a.extend_from_slice(args);
        sh("ip", &a)
    }

    /// Whether one ping from this namespace to `to` is answered within a second.
    fn pings(&self, to: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.netns, "ping", "-c1", "-W1", "-q", to])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn pid(&self) -> i64 {
        let st = self.containers.state(ID).expect("no container");
        assert_eq!(st.status, "running");
        st.pid
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.containers.delete(ID);
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

fn sh(prog: &str, args: &[&str]) -> String {
    let o = Command::new(prog).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{prog} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn spec() -> ContainerSpec {
    let mut s = ContainerSpec::new(
        ID,
        env!("CARGO_BIN_EXE_tun-echo").into(),
        vec![DEV.into()],
        "10.77.1.99".parse().unwrap(),
        16,
        "small",
    )
    .unwrap();
    s.tun = true;
    s.caps = vec!["CAP_NET_ADMIN".into()];
    s
}

/// `tun-echo` running at `src`, its device configured from outside as an up-script would:
/// an address (pings to the rest of its /24 go into the device) and a route of its own.
fn start(src: &Host, spec: &ContainerSpec) {
    src.prepare(spec);
    src.runc
        .run(ID, &src.bundle(), &src.dir.join("log"))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !src.ip(&["link", "show"]).contains(DEV) {
        assert!(Instant::now() < deadline, "tun-echo made no {DEV}");
        std::thread::sleep(Duration::from_millis(10));
    }
    src.ip(&["addr", "add", "10.99.0.1/24", "dev", DEV]);
    src.ip(&["link", "set", DEV, "mtu", "1400", "up"]);
    src.ip(&["route", "add", "10.98.0.0/24", "dev", DEV]);
    assert!(src.pings("10.99.0.2") && src.pings("10.98.0.5"));
}

/// The criu to test with, which must restore TUN files.
fn patched_criu() -> PathBuf {
    let criu = PathBuf::from(
        std::env::var("COREHOP_CRIU").unwrap_or_else(|_| "/usr/local/sbin/criu".into()),
    );
    assert!(
        tun::criu_restores_tun(&criu),
        "{} lacks scripts/criu/tun-external.patch: run `make setup`, or set COREHOP_CRIU to a CRIU built with it",
        criu.display()
    );
    criu
}

/// Dumps the container at `src` into `images`.
fn dump(src: &Host, spec: &ContainerSpec, images: &Path) -> anyhow::Result<()> {
    let work = src.dir.join("work-dump");
    std::fs::create_dir_all(images)?;
    std::fs::create_dir_all(&work)?;
    let swrk = src.containers.warm_dump()?;
    let dirs = RoundDirs {
        images,
        work: &work,
    };
    let opts = CheckpointOpts::default();
    src.containers
        .checkpoint(ID, &src.layout(spec), dirs, &opts, swrk, |_| Ok(()))?;
    Ok(())
}

fn restore(
    dst: &Host,
    spec: &ContainerSpec,
    images: &Path,
    warm: WarmRestore,
) -> anyhow::Result<i64> {
    let work = dst.dir.join("work-restore");
    std::fs::create_dir_all(&work)?;
    let dirs = RoundDirs {
        images,
        work: &work,
    };
    dst.containers
        .restore(ID, &dst.layout(spec), dirs, false, warm, |_, _| Ok(()))
}

/// The fdinfo of `pid`'s only TUN file.
fn tun_fdinfo(pid: i64) -> String {
    let fds = tun::tun_fds(pid);
    assert_eq!(fds.len(), 1, "TUN files of {pid}: {fds:?}");
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fds[0])).unwrap()
}

#[test]
fn an_unmodified_programs_tun_file_moves_to_another_namespace() {
    let criu = patched_criu();
    let spec = spec();
    let src = Host::new("a", &criu);
    start(&src, &spec);

    // What the source's agent tells the destination when it is prepared.
    let found = src.containers.tun_devices(ID, &src.netns_path()).unwrap();
    let want = TunDevice {
        name: DEV.into(),
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as u16,
        // fdinfo shows O_LARGEFILE (0o100000), which libc gives as 0 on 64-bit targets.
        file_flags: libc::O_RDWR | libc::O_NONBLOCK | 0o100000,
        mtu: 1400,
        up: true,
        addresses: vec![TunAddress {
            local: "10.99.0.1".parse().unwrap(),
            peer: None,
            prefix_len: 24,
        }],
        routes: vec![TunRoute {
            dst: "10.98.0.0".parse().unwrap(),
            prefix_len: 24,
            gateway: None,
            metric: None,
        }],
    };
    assert_eq!(found, vec![want.clone()]);

    // The destination makes the device and its file ahead of the dump.
    let dst = Host::new("b", &criu);
    dst.prepare(&spec);
    let warm = dst.warm_restore(&found);
    assert!(
        dst.ip(&["-d", "link", "show", DEV]).contains("persist on"),
        "made ahead, the device must outlive the agent's calls"
    );

    let images = src.dir.join("images");
    let t = Instant::now();
    dump(&src, &spec, &images).unwrap();
    let dumped = t.elapsed();
    assert_eq!(tun::load(&images).unwrap(), vec![want]);
    let t = Instant::now();
    let pid = restore(&dst, &spec, &images, warm).unwrap();
    eprintln!(
        "dump {:.1} ms, restore {:.1} ms",
        dumped.as_secs_f64() * 1e3,
        t.elapsed().as_secs_f64() * 1e3
    );

    // The restored task's file is attached to the device here, non-blocking as it was.
    let info = tun_fdinfo(pid);
    assert!(info.contains(&format!("iff:\t{DEV}")), "{info}");
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| i32::from_str_radix(f.trim(), 8).ok())
        .unwrap();
    assert_ne!(flags & libc::O_NONBLOCK, 0, "{info}");
    // It answers through it: the address's prefix and the route were re-made.
    assert!(
        dst.pings("10.99.0.2"),
        "no answer through {DEV} after the restore"
    );
    assert!(
        dst.pings("10.98.0.5"),
        "the route via {DEV} was not re-made"
    );
    // Not persistent here either: it goes with the task's file, as it did at the source.
    assert!(dst.ip(&["-d", "link", "show", DEV]).contains("persist off"));
    assert!(
        !src.ip(&["link", "show"]).contains(DEV),
        "the source's device outlived its task"
    );
    assert_eq!(dst.pid(), pid);
}

/// The first CRIU found that does not restore TUN files, if any.
fn unpatched_criu() -> Option<PathBuf> {
    std::env::var("COREHOP_PLAIN_CRIU")
        .ok()
        .into_iter()
        .chain([
            "/usr/local/sbin/criu".into(),
            "/var/cache/corehop/criu-src/criu/criu".into(),
        ])
        .map(PathBuf::from)
        .find(|c| c.is_file() && !tun::criu_restores_tun(c))
}

#[test]
fn without_the_patch_a_tun_program_is_refused_before_the_dump() {
    let Some(criu) = unpatched_criu() else {
        eprintln!("skipped: no CRIU without the TUN patch here (COREHOP_PLAIN_CRIU names one)");
        return;
    };
    let spec = spec();
    let mut src = Host::new("c", &criu);
    start(&src, &spec);
    let images = src.dir.join("images");
    let e = format!("{:#}", dump(&src, &spec, &images).unwrap_err());
    for s in [ID, DEV, "tun-external.patch", "make setup"] {
        assert!(e.contains(s), "{s:?} missing from: {e}");
    }
    // Refused before CRIU froze it: it still runs and answers.
    src.pid();
    assert!(src.pings("10.99.0.2"));

    // What the check spares: this CRIU dumps the file but cannot restore it.
    src.containers.restores_tun = true;
    dump(&src, &spec, &images).unwrap();
    let mut dst = Host::new("d", &criu);
    dst.containers.restores_tun = true;
    dst.prepare(&spec);
    let warm = dst.warm_restore(&tun::load(&images).unwrap());
    let e = format!("{:#}", restore(&dst, &spec, &images, warm).unwrap_err());
    assert!(e.contains(&format!("No tun device for file {DEV}")), "{e}");
}
