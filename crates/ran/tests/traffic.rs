//! A busy RAN against the real HSS, MME and SPGW in a network namespace (needs root):
//! two eNBs of different TACs, 50 UEs under the `mixed` traffic model at a high rate,
//! downlink datagrams from a second namespace standing in for the pdn host (so idle
//! UEs are paged), and the MME frozen for a second in the middle, as a migration
//! freezes it. No procedure may fail.
//!
//! Today's MME has neither TAU nor handover: the model file switches them off
//! (`tau = false`, `handovers = "none"`), and those events are counted as skipped.

mod common;

use std::time::Duration;

use common::*;
use ran::ProcedureKind as K;

/// How the two eNBs of a test are configured.
#[derive(Clone, Copy, PartialEq)]
enum Enbs {
    /// `[[enbs]]` on 127.0.0.21 and 127.0.0.22.
    TwoAddresses,
    /// None configured: the model's two, sharing 127.0.0.21.
    FromModel,
}

/// Runs `model` (a TOML model file's text) on 50 UEs over two eNBs of TACs 1 and 2
/// against the real functions, the MME frozen for `freeze` 8 s after the attaches;
/// stops 10 s later. The report and the frozen window (UNIX ms).
fn run_two_enbs(tag: &str, model: &str, enbs: Enbs, freeze: Duration) -> (ran::Report, (u64, u64)) {
    let dir = TempDir::new(tag);
    let ns = Netns::new(tag);
    let pdn = pdn_host(&ns, &format!("{tag}-pdn"));
    // The MME serves both eNBs' tracking areas (its TAI list, where it pages).
    let mme_cfg = mme::Config {
        tacs: vec![1, 2],
        ..mme_config()
    };
    let epc = ThreadedEpc::start(&ns, &dir.0, mme_cfg);
    let model_file = dir.0.join("model.toml");
    std::fs::write(&model_file, model).unwrap();
    let enb = |enb_id: u32, tac: u16, last: u8| ran::EnbConfig {
        enb_id,
        name: format!("enb-{enb_id}"),
        tac,
        s1u_address: std::net::Ipv4Addr::new(127, 0, 0, last),
        bind: None,
        gtpu_port: 2152,
    };
    ns.run(|| async {
        let window = std::sync::Mutex::new((0, 0));
        let (progress, mut seen) = tokio::sync::watch::channel(ran::Progress::default());
        let stop = async {
            let p = seen
                .wait_for(ran::Progress::attach_phase_over)
                .await
                .unwrap()
                .clone();
            assert_eq!(p.attached, 50, "{p:?}");
            tokio::time::sleep(Duration::from_secs(8)).await;
            let t = unix_ms();
            epc.mme.freeze(freeze);
            *window.lock().unwrap() = (t, t + freeze.as_millis() as u64);
            tokio::time::sleep(Duration::from_secs(10)).await;
        };
        let cfg = ran::Config {
            enbs: match enbs {
                Enbs::TwoAddresses => vec![enb(1, 1, 21), enb(2, 2, 22)],
                Enbs::FromModel => vec![],
            },
            traffic: model_file.to_str().unwrap().into(),
            seed: 7,
            downlink_from_netns: Some(pdn.0.clone()),
            cp_probe_interval_ms: 100,
            ..ran_config(50)
        };
        let r = ran::run_with_progress(cfg, stop, progress)
            .await
            .expect("RAN run");
        let w = *window.lock().unwrap();
        (r, w)
    })
}

#[test]
fn mixed_traffic_over_two_enbs_survives_a_frozen_mme() {
    assert!(
        is_root(),
        "this test creates network namespaces: run it as root"
    );
    init_tracing();
    let model = "base = \"mixed\"\n\
                 # 50 UEs: one event per UE every 2 s on average.\n\
                 procedures_per_s = 25.0\n\
                 idle_after_ms = 400\n\
                 reattach_after_ms = 200\n\
                 tau = false\n\
                 handovers = \"none\"\n";
    let (report, window) = run_two_enbs(
        "traffic",
        model,
        Enbs::TwoAddresses,
        Duration::from_millis(1000),
    );
    let p = &report.procedures;
    println!("MME frozen {window:?}; dropped {:?}", report.dropped);
    assert_eq!(report.enbs.len(), 2);
    for e in &report.enbs {
        assert_eq!((e.s1_setups, e.association_losses), (1, 0), "{e:?}");
    }
    assert!(
        report.attach_failures.is_empty(),
        "{:?}",
        report.attach_failures
    );
    assert_eq!(report.ues.len(), 50);
    assert_all_ok(
        &report,
        &[
            K::Attach,
            K::Release,
            K::ServiceRequest,
            K::ServiceRequestPaging,
            K::Detach,
            K::Reattach,
        ],
    );
    for kind in [K::TauPeriodic, K::TauNormal, K::X2Handover, K::S1Handover] {
        assert!(!p.by_kind.contains_key(&kind), "{kind:?} is switched off");
    }
    assert!(
        p.skipped.get("mobility").is_some_and(|n| *n > 0),
        "{:?}",
        p.skipped
    );
    // Paging works end to end: downlink sent from the pdn host reaches the UEs.
    assert!(p.downlink_sent > 0);
    assert!(p.downlink_received > 0, "{} sent", p.downlink_sent);
    let per_ue: u64 = report.ues.iter().map(|u| u.downlink_received).sum();
    assert!(per_ue <= p.downlink_received);
    assert!(report.idle.pagings > 0 && report.idle.service_requests_mt > 0);
    // Procedures ran through the freeze and are split around it.
    let w = p.within(window.0, window.1);
    let during: u64 = w.during.values().map(|s| s.count).sum();
    assert!(during > 0, "nothing overlapped the freeze");
    assert!(w.before.contains_key(&K::Attach) && !w.after.is_empty());
    let n = |m: &std::collections::BTreeMap<K, ran::ProcedureStats>| {
        m.values().map(|s| s.count).sum::<u64>()
    };
    assert_eq!(n(&w.before) + during + n(&w.after), p.records.len() as u64);
}

/// No procedure failed, each of `kinds` succeeded with ordered percentiles, every UE
/// detached at the end.
fn assert_all_ok(report: &ran::Report, kinds: &[K]) {
    let p = &report.procedures;
    println!(
        "{}",
        serde_json::to_string_pretty(&(&p.by_kind, &p.skipped)).unwrap()
    );
    let failures: Vec<_> = p.records.iter().filter(|r| !r.ok).collect();
    assert!(failures.is_empty(), "failed procedures: {failures:#?}");
    for kind in kinds {
        let s = p.by_kind.get(kind).unwrap_or_else(|| panic!("no {kind:?}"));
        assert!(s.succeeded > 0, "{kind:?}: {s:?}");
        let l = s.latency_ms.unwrap();
        assert!(
            l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.max,
            "{kind:?}: {l:?}"
        );
    }
    for u in &report.ues {
        assert!(u.detached, "{u:?}");
    }
}

/// X2 and S1 handovers of connected UEs between the two eNBs of `mixed` (one S1-U
/// address), through a frozen MME.
#[test]
fn handovers_between_two_enbs_survive_a_frozen_mme() {
    assert!(
        is_root(),
        "this test creates network namespaces: run it as root"
    );
    init_tracing();
    // Long idle timer and mostly moves: the UEs are connected when they move.
    let model = "base = \"mixed\"\n\
                 procedures_per_s = 25.0\n\
                 idle_after_ms = 5000\n\
                 uplink = 0.0\n\
                 downlink = 1.0\n\
                 periodic_tau = 0.0\n\
                 mobility = 8.0\n\
                 detach = 0.0\n\
                 tau = false\n\
                 handovers = \"both\"\n";
    let (report, _) = run_two_enbs(
        "handover",
        model,
        Enbs::FromModel,
        Duration::from_millis(1000),
    );
    assert_eq!(report.enbs.len(), 2, "mixed runs two eNBs");
    assert_all_ok(&report, &[K::X2Handover, K::S1Handover]);
    // Every UE's pings went on after its handovers.
    for u in &report.ues {
        assert!(u.pings_received > 0, "{u:?}");
    }
}

/// Periodic TAUs of idle UEs and normal TAUs of idle UEs moving between the eNBs' TACs,
/// through a frozen MME.
#[test]
fn tracking_area_updates_survive_a_frozen_mme() {
    assert!(
        is_root(),
        "this test creates network namespaces: run it as root"
    );
    init_tracing();
    // Short idle timer and mostly TAU events: the UEs are idle when they move.
    let model = "base = \"mixed\"\n\
                 procedures_per_s = 25.0\n\
                 idle_after_ms = 200\n\
                 uplink = 1.0\n\
                 downlink = 1.0\n\
                 periodic_tau = 3.0\n\
                 mobility = 5.0\n\
                 detach = 0.0\n\
                 tau = true\n\
                 handovers = \"none\"\n";
    let (report, _) = run_two_enbs(
        "tau",
        model,
        Enbs::TwoAddresses,
        Duration::from_millis(1000),
    );
    assert_all_ok(
        &report,
        &[K::TauPeriodic, K::TauNormal, K::ServiceRequestPaging],
    );
}
