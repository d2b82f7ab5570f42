//! Service recovery as the UEs see it: the MME and then the SPGW are frozen (their
//! threads blocked, as a CRIU checkpoint freezes a process) while the RAN runs. The
//! longest CP_S1-MME outage must fall in the MME's frozen window and each UE's longest
//! DP_GTP outage in the SPGW's, matched through the report's UNIX timestamps — what
//! an experiment does with a migration's downtime window. Needs root (netns).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn frozen_mme_and_spgw_show_up_as_cp_and_dp_outages() {
    assert!(
        is_root(),
        "this test creates a network namespace: run it as root"
    );
    init_tracing();
    let dir = TempDir::new("recovery");
    let ns = Netns::new("recovery");
    let epc = ThreadedEpc::start(&ns, &dir.0, mme_config());
    let (mme, spgw) = (&epc.mme, &epc.spgw);
    let freeze = Duration::from_millis(600);
    let (report, mme_window, spgw_window) = ns.run(|| async {
        let windows = std::sync::Mutex::new(((0, 0), (0, 0)));
        let (progress, mut seen) = tokio::sync::watch::channel(ran::Progress::default());
        let stop = async {
            // Freeze only once both UEs are attached and pinging.
            let p = seen
                .wait_for(ran::Progress::attach_phase_over)
                .await
                .unwrap()
                .clone();
            assert_eq!(p.attached, 2, "{p:?}");
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let t = unix_ms();
            mme.freeze(freeze);
            windows.lock().unwrap().0 = (t, t + freeze.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let t = unix_ms();
            spgw.freeze(freeze);
            windows.lock().unwrap().1 = (t, t + freeze.as_millis() as u64);
            tokio::time::sleep(Duration::from_millis(1500)).await;
        };
        let cfg = ran::Config {
            ping_interval_ms: 5,
            cp_probe_interval_ms: 20,
            ..ran_config(2)
        };
        let r = ran::run_with_progress(cfg, stop, progress)
            .await
            .expect("RAN run");
        let (m, s) = *windows.lock().unwrap();
        (r, m, s)
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report.recovery).unwrap()
    );
    println!("MME frozen {mme_window:?}, SPGW frozen {spgw_window:?}");
    assert_eq!(report.ues.len(), 2, "{:?}", report.attach_failures);
    assert_eq!(report.s1_setups, 1, "the association survived the freeze");

    let cp = report.recovery.cp_s1_mme.longest.expect("CP series");
    assert!(
        cp.overlaps_unix(mme_window.0, mme_window.1),
        "longest CP outage {cp:?} is not the MME freeze {mme_window:?}"
    );
    assert!(cp.recovered);
    let w = report.recovery.within(mme_window.0, mme_window.1);
    assert!(!w.cp_s1_mme.is_empty());
    for u in &report.recovery.dp_gtp {
        let dp = u.series.longest.expect("DP series");
        assert!(
            dp.overlaps_unix(spgw_window.0, spgw_window.1),
            "{}: longest DP outage {dp:?} is not the SPGW freeze {spgw_window:?}",
            u.imsi
        );
        assert!(dp.recovered);
    }
    for u in &report.ues {
        assert!(u.detached, "{u:?}");
        assert_eq!(u.max_ping_gap_ms, {
            let l = report
                .recovery
                .dp_gtp
                .iter()
                .find(|d| d.imsi == u.imsi)
                .and_then(|d| d.series.longest)
                .unwrap();
            l.duration_ms
        });
    }
}

/// A freeze longer than the eNB's SCTP path-failure detection: the association is
/// declared lost, re-established with a second S1 Setup, and the CP probe resumes.
#[test]
fn lost_association_is_re_established_with_a_new_s1_setup() {
    assert!(
        is_root(),
        "this test creates a network namespace: run it as root"
    );
    init_tracing();
    let dir = TempDir::new("reassoc");
    let ns = Netns::new("reassoc");
    let epc = ThreadedEpc::start(&ns, &dir.0, mme_config());
    let mme = &epc.mme;
    let (report, window) = ns.run(|| async {
        let window = std::sync::Mutex::new((0, 0));
        let (progress, mut seen) = tokio::sync::watch::channel(ran::Progress::default());
        let stop = async {
            seen.wait_for(ran::Progress::attach_phase_over)
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t = unix_ms();
            mme.freeze(Duration::from_millis(1500));
            *window.lock().unwrap() = (t, t + 1500);
            tokio::time::sleep(Duration::from_millis(3000)).await;
        };
        let cfg = ran::Config {
            cp_probe_interval_ms: 20,
            // Path failure after ~3 silent 100 ms HEARTBEAT intervals.
            sctp: proto_sctp::SctpTuning {
                heartbeat_interval_ms: 100,
                max_missed_heartbeats: 3,
                ..Default::default()
            },
            detach_timeout_ms: 1000,
            ..ran_config(1)
        };
        let r = ran::run_with_progress(cfg, stop, progress)
            .await
            .expect("RAN run");
        let w = *window.lock().unwrap();
        (r, w)
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(report.association_losses, 1);
    assert_eq!(report.s1_setups, 2);
    let cp = report.recovery.cp_s1_mme.longest.unwrap();
    assert!(cp.overlaps_unix(window.0, window.1), "{cp:?} vs {window:?}");
    assert!(cp.recovered, "the probe is answered on the new association");
    // The MME tied the UE to the old association: the detach is refused, quickly.
    let u = &report.ues[0];
    assert!(!u.detached);
    assert!(
        u.detach_error
            .as_deref()
            .unwrap_or("")
            .contains("Error Indication"),
        "{u:?}"
    );
}
