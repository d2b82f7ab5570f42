//! The RAN emulator against the real HSS, MME and SPGW in a network namespace of its
//! own (needs root): attaches, pings through GTP-U to the SGi gateway, the S1-MME
//! probe, detach; rejects reported per UE; garbage on S1-U dropped; and the wire
//! (S1AP/NAS over SCTP/UDP, GTP-U) checked with tshark.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use ran::{FailureKind, Report};

/// tshark capturing on the namespace's loopback, stopped on drop.
struct Capture(Child);

impl Capture {
    fn start(ns: &Netns, file: &std::path::Path) -> Capture {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.0, "tshark", "-q", "-i", "lo", "-w"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tshark missing (make setup)");
        // tshark needs a moment before it captures.
        std::thread::sleep(Duration::from_millis(1500));
        Capture(child)
    }

    fn stop(mut self) {
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        // NAS here is ciphered with 128-EEA2; by default Wireshark tries to read
        // ciphered NAS as if it were EEA0 and then calls 1 in 16 messages malformed.
        .args(["-o", "nas-eps.null_decipher:FALSE"])
        .args(args)
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check_report_basics(r: &Report) {
    let json = serde_json::to_string_pretty(r).unwrap();
    println!("{json}");
    assert_eq!(r.s1_setups, 1);
    assert_eq!(r.association_losses, 0);
    assert!(r.cp_probe.sent > 0, "{:?}", r.cp_probe);
    // Every probe but possibly the one in flight at the stop is answered.
    assert!(
        r.cp_probe.answered + 1 >= r.cp_probe.sent,
        "{:?}",
        r.cp_probe
    );
    assert_eq!(r.cp_probe.failures, 0);
    assert!(r.recovery.cp_s1_mme.longest.is_some());
    for u in &r.ues {
        assert!(u.detached, "{}: {:?}", u.imsi, u.detach_error);
        assert!(u.kenb_match, "{}: KeNB differs", u.imsi);
        assert!(u.pings_sent > 0 && u.pings_received > 0, "{u:?}");
        assert!(u.pings_received <= u.pings_sent, "{u:?}");
        assert!(u.rtt_ms_avg.is_some(), "{u:?}");
        assert!(u.max_ping_gap_ms > 0.0);
    }
}

#[test]
fn three_ues_attach_ping_probe_and_detach() {
    assert!(
        is_root(),
        "this test creates a network namespace: run it as root"
    );
    init_tracing();
    let dir = TempDir::new("e2e");
    let ns = Netns::new("e2e");
    let pcap = dir.0.join("ran.pcap");
    let cap = Capture::start(&ns, &pcap);
    let report = ns.run(|| async {
        let _epc = start_epc(&dir.0).await;
        let cfg = ran::Config {
            // 1 ms pings, the paper's ICMP rate.
            ping_interval_ms: 1,
            cp_probe_interval_ms: 50,
            duration_ms: Some(3000),
            ..ran_config(3)
        };
        ran::run(cfg, std::future::pending())
            .await
            .expect("RAN run")
    });
    cap.stop();

    check_report_basics(&report);
    assert!(
        report.attach_failures.is_empty(),
        "{:?}",
        report.attach_failures
    );
    assert_eq!(report.ues.len(), 3);
    let distinct = |f: &dyn Fn(&ran::UeReport) -> String| {
        report.ues.iter().map(f).collect::<HashSet<_>>().len()
    };
    assert_eq!(distinct(&|u| u.ue_ip.to_string()), 3);
    assert_eq!(distinct(&|u| u.enb_teid.to_string()), 3);
    assert_eq!(distinct(&|u| u.sgw_teid.to_string()), 3);
    assert_eq!(distinct(&|u| u.mme_ue_s1ap_id.to_string()), 3);
    for (i, u) in report.ues.iter().enumerate() {
        assert_eq!(u.imsi, format!("00101{:010}", i + 1));
        assert!(u.ue_ip.octets()[..2] == [10, 45], "{}", u.ue_ip);
        assert_eq!(u.sgw_addr, SPGW);
        // At 1 ms for ~3 s: thousands of pings, nearly all answered on loopback.
        assert!(u.pings_sent > 500, "{u:?}");
        assert!(u.pings_received * 10 >= u.pings_sent * 9, "{u:?}");
    }
    assert_eq!(report.recovery.dp_gtp.len(), 3);
    // The recovery window API: the whole run overlaps every series' longest gap.
    let w = report.recovery.within(
        report.started_unix_ms,
        report.started_unix_ms + report.duration_ms as u64,
    );
    assert_eq!(w.dp_gtp.len(), 3);

    // The wire, as Wireshark sees it.
    let file = pcap.to_str().unwrap();
    let malformed = tshark(&["-r", file, "-Y", "_ws.malformed"]);
    if !malformed.trim().is_empty() {
        // Keep the capture for a look in Wireshark (the temp dir goes away).
        let kept = std::env::temp_dir().join("corehop-ran-e2e-malformed.pcap");
        let _ = std::fs::copy(&pcap, &kept);
        panic!(
            "malformed packets (capture kept in {}):\n{malformed}",
            kept.display()
        );
    }
    let verbose = tshark(&["-r", file, "-V"]);
    assert!(
        !verbose.contains("Malformed"),
        "malformed packets in {file}"
    );
    let errors = tshark(&["-r", file, "-Y", "_ws.expert.severity == error"]);
    assert!(errors.trim().is_empty(), "expert errors:\n{errors}");
    let cols = tshark(&[
        "-r",
        file,
        "-T",
        "fields",
        "-e",
        "_ws.col.Protocol",
        "-e",
        "_ws.col.Info",
    ]);
    for want in [
        "S1SetupRequest",
        "S1SetupResponse",
        "InitialUEMessage",
        "Attach request",
        "Authentication response",
        "InitialContextSetupResponse",
        "ENBConfigurationUpdate",
        "ENBConfigurationUpdateAcknowledge",
        "UEContextReleaseComplete",
        "Echo (ping) request",
        "Echo (ping) reply",
    ] {
        assert!(cols.contains(want), "{want:?} missing in the capture");
    }
}

#[test]
fn rejects_are_reported_per_ue_and_others_unaffected() {
    assert!(
        is_root(),
        "this test creates a network namespace: run it as root"
    );
    init_tracing();
    let dir = TempDir::new("rejects");
    // USIMs: a good subscriber, an IMSI the HSS does not know, and a known IMSI whose
    // USIM has another key (the network's AUTN fails the USIM's MAC check).
    let csv = dir.0.join("usims.csv");
    std::fs::write(
        &csv,
        "imsi,k,opc,amf,sqn\n\
         001010000000005,465b5ce8b199b49faa5f0a2e00000005,cd63cb71954a9f4e48a5994e00000005,8000,0\n\
         001019999999999,465b5ce8b199b49faa5f0a2e00000009,cd63cb71954a9f4e48a5994e00000009,8000,0\n\
         001010000000006,00000000000000000000000000000000,cd63cb71954a9f4e48a5994e00000006,8000,0\n",
    )
    .unwrap();
    let ns = Netns::new("rej");
    let report = ns.run(|| async {
        let _epc = start_epc(&dir.0).await;
        // Garbage at the eNB's S1-U while it runs: dropped, never harmful.
        let junk = tokio::spawn(async {
            let s = tokio::net::UdpSocket::bind((SPGW, 0)).await.unwrap();
            let mut i = 0u8;
            loop {
                for g in [
                    &b""[..],
                    b"\x30",
                    b"\x30\xff\x00\x10\x00\x00\x00\x01",
                    &[0x30, 0xff, 0, 4, 0, 0, 0, 1, 0x45, 0, 0, 0],
                    &[0x32, 0x01, 0, 4, 0, 0, 0, 0, 0, i, 0, 0],
                    &[0x34, 0xff, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0x85, 0, 0, 0, 0],
                    &[0xff; 64],
                ] {
                    let _ = s.send_to(g, (ENB, 2152)).await;
                }
                i = i.wrapping_add(1);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let cfg = ran::Config {
            subscribers: csv.clone(),
            ping_interval_ms: 20,
            ..ran_config(3)
        };
        // Stopped by the future this time (no duration).
        let r = ran::run(cfg, tokio::time::sleep(Duration::from_secs(4)))
            .await
            .expect("RAN run");
        junk.abort();
        r
    });
    check_report_basics(&report);
    assert_eq!(report.ues.len(), 1, "{:?}", report.attach_failures);
    assert_eq!(report.ues[0].imsi, "001010000000005");
    assert_eq!(report.attach_failures.len(), 2);
    let unknown = &report.attach_failures[0];
    assert_eq!(unknown.imsi, "001019999999999");
    assert_eq!(unknown.kind, FailureKind::AttachReject);
    // TS 29.272 Table A.1: DIAMETER_ERROR_USER_UNKNOWN → #8.
    assert_eq!(unknown.emm_cause, Some(8));
    let wrong_key = &report.attach_failures[1];
    assert_eq!(wrong_key.imsi, "001010000000006");
    assert_eq!(wrong_key.kind, FailureKind::AuthenticationReject);
    assert_eq!(wrong_key.ue_auth_failure_cause, Some(20), "MAC failure");
    assert!(report.dropped.gtpu > 0, "{:?}", report.dropped);
}
