//! What makes a whole run impossible is an error naming the cause (no root needed).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

fn cfg() -> ran::Config {
    // A port where nothing answers: a bound UDP socket that never reads.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mme = silent.local_addr().unwrap();
    std::mem::forget(silent);
    ran::Config {
        mme,
        bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        s1u_address: Ipv4Addr::LOCALHOST,
        gtpu_port: 0,
        s1_setup_timeout_ms: 400,
        ..Default::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn no_mme_is_an_error_naming_it() {
    let c = cfg();
    let mme = c.mme;
    let t = Instant::now();
    let e = rt()
        .block_on(ran::run(c, std::future::pending()))
        .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains(&mme.to_string()), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn stop_before_s1_setup_ends_the_run() {
    let c = ran::Config {
        s1_setup_timeout_ms: 60_000,
        ..cfg()
    };
    let t = Instant::now();
    let e = rt()
        .block_on(async { ran::run(c, tokio::time::sleep(Duration::from_millis(200))).await })
        .unwrap_err();
    assert!(e.to_string().contains("stopped before"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn bad_subscribers_are_named() {
    let c = ran::Config {
        subscribers: "/nonexistent/usims.csv".into(),
        ..cfg()
    };
    let e = rt()
        .block_on(ran::run(c, std::future::pending()))
        .unwrap_err();
    assert!(format!("{e:#}").contains("/nonexistent/usims.csv"), "{e:#}");
    let c = ran::Config {
        ues: 10,
        first_imsi_index: 995,
        ..cfg()
    };
    let e = rt()
        .block_on(ran::run(c, std::future::pending()))
        .unwrap_err();
    assert!(e.to_string().contains("1000 subscribers"), "{e}");
    let c = ran::Config {
        mme: SocketAddr::from(([127, 0, 0, 1], 9)),
        mcc: "01".into(),
        ..cfg()
    };
    assert!(rt().block_on(ran::run(c, std::future::pending())).is_err());
}

#[test]
fn bad_traffic_models_are_named() {
    let e = cfg_with_traffic("busy");
    assert!(
        e.contains("traffic = \"busy\"") && e.contains("static, mixed"),
        "{e}"
    );
    let dir = std::env::temp_dir().join(format!("corehop-ran-traffic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("model.toml");
    std::fs::write(&file, "procedures_per_s = 10.0\nuplink = -1.0\n").unwrap();
    let e = cfg_with_traffic(file.to_str().unwrap());
    assert!(e.contains("model.toml") && e.contains("uplink"), "{e}");
    std::fs::write(&file, "base = \"mixed\"\nhandover = \"x2\"\n").unwrap();
    let e = cfg_with_traffic(file.to_str().unwrap());
    assert!(e.contains("handover"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The error of a run with this `traffic`, as printed.
fn cfg_with_traffic(traffic: &str) -> String {
    let c = ran::Config {
        traffic: traffic.into(),
        ..cfg()
    };
    let e = rt()
        .block_on(ran::run(c, std::future::pending()))
        .unwrap_err();
    format!("{e:#}")
}
