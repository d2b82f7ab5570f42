//! A program's open TUN file survives a CRIU migration without the program's help (issue
//! 13): `tun-echo` (this crate's stand-in for OpenVPN: it creates its device and answers
//! pings through it) runs in a runc container in one private namespace, is dumped there and
//! restored into another, where runtime::tun re-made the device and CRIU handed the
//! restored task the file the runtime attached. Root only (namespaces, runc, CRIU).
//!
//! The CRIU under test is `COREHOP_CRIU`, else the installed one; it must carry
//! scripts/criu/tun-external.patch (`make setup` builds it so). An unpatched CRIU, where one
//! is found, shows the failure the patch removes.
mod common;

use common::{dump, restore, tun_fdinfo, Host};
use runtime::tun::{self, TunAddress, TunDevice, TunRoute};
use runtime::ContainerSpec;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ID: &str = "tunecho";
const DEV: &str = "tun0";

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

#[test]
fn an_unmodified_programs_tun_file_moves_to_another_namespace() {
    let criu = patched_criu();
    let spec = spec();
    let src = Host::new(ID, "a", &criu);
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
    let dst = Host::new(ID, "b", &criu);
    dst.prepare(&spec);
    let warm = dst.warm_restore(&found);
    assert!(
        dst.ip(&["-d", "link", "show", DEV]).contains("persist on"),
        "made ahead, the device must outlive the agent's calls"
    );

    let images = src.dir.join("images");
    let swrk = src.containers.warm_dump().unwrap();
    let t = Instant::now();
    dump(&src, &spec, &images, swrk).unwrap();
    let dumped = t.elapsed();
    assert_eq!(tun::load(&images).unwrap(), vec![want]);
    let t = Instant::now();
    let pid = restore(&dst, &spec, &images, warm, |_, _| Ok(())).unwrap();
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
    let mut src = Host::new(ID, "c", &criu);
    start(&src, &spec);
    let images = src.dir.join("images");
    let e = format!(
        "{:#}",
        dump(&src, &spec, &images, src.containers.warm_dump().unwrap()).unwrap_err()
    );
    for s in [ID, DEV, "tun-external.patch", "make setup"] {
        assert!(e.contains(s), "{s:?} missing from: {e}");
    }
    // Refused before CRIU froze it: it still runs and answers.
    src.pid();
    assert!(src.pings("10.99.0.2"));

    // What the check spares: this CRIU dumps the file but cannot restore it.
    src.containers.restores_tun = true;
    dump(&src, &spec, &images, src.containers.warm_dump().unwrap()).unwrap();
    let mut dst = Host::new(ID, "d", &criu);
    dst.containers.restores_tun = true;
    dst.prepare(&spec);
    let warm = dst.warm_restore(&tun::load(&images).unwrap());
    let e = format!(
        "{:#}",
        restore(&dst, &spec, &images, warm, |_, _| Ok(())).unwrap_err()
    );
    assert!(e.contains(&format!("No tun device for file {DEV}")), "{e}");
}
