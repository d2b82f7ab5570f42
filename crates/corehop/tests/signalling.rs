//! Migration in the middle of signalling (`corehop signalling`, plans/signalling.toml): 1000
//! UEs run the `mixed` traffic model (idle and back, paging on downlink from the pdn host,
//! periodic and normal TAU, X2 and S1 handover between two eNBs, detach and re-attach) at
//! about 50 procedures/s while the MME, the SPGW and the HSS migrate one after another, with
//! stop-and-copy and with pre-copy. No procedure may fail, no context or tunnel be lost, and
//! the three functions' own views of every UE must agree afterwards; the fabric's capture
//! must decode with nothing malformed and hold every procedure's messages.
mod common;
use common::*;

#[test]
fn every_procedure_completes_and_the_views_agree_across_three_migrations() {
    let _lab = Lab::up();
    let tmp = TempDir::new("signalling");
    let out = tmp.0.join("out");
    let pcap = tmp.0.join("fabric.pcap");
    let plan = concat!(env!("CARGO_MANIFEST_DIR"), "/../../plans/signalling.toml");
    let r = corehop(&[
        "signalling",
        plan,
        "--runs",
        "1",
        "--settle-s",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--capture",
        pcap.to_str().unwrap(),
    ]);
    let report = std::fs::read_to_string(out.join("report.md")).unwrap_or_default();
    assert!(
        r.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let runs: Vec<serde_json::Value> = std::fs::read_to_string(out.join("runs.jsonl"))
        .unwrap()
        .lines()
        .map(json)
        .collect();
    assert_eq!(runs.len(), 2, "{report}");
    for run in &runs {
        assert_eq!(run["contexts"], 1000, "{run}");
        assert_eq!(run["tunnels"], 1000, "{run}");
        assert_eq!(run["disagreements"].as_array().unwrap().len(), 0, "{run}");
        let moved: Vec<&str> = run["moves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["function"].as_str().unwrap())
            .collect();
        assert_eq!(moved, ["mme", "spgw", "hss"], "{run}");
        for m in run["moves"].as_array().unwrap() {
            assert!(m["during"]["count"].as_u64().unwrap() > 0, "nothing in flight: {m}");
        }
        // Every kind of the mix happened, none failed.
        let kinds = run["procedures"].as_object().unwrap();
        for k in [
            "attach",
            "release",
            "service_request",
            "service_request_paging",
            "tau_periodic",
            "tau_normal",
            "x2_handover",
            "s1_handover",
            "detach",
            "reattach",
        ] {
            let p = &kinds[k];
            assert!(p["count"].as_u64().unwrap() > 0, "no {k}: {run}");
            assert_eq!(p["failed"], 0, "{k}: {p}");
        }
    }
    assert!(report.contains("| stop-and-copy | 1 | hss |"), "{report}");

    // The wire: nothing malformed, and every procedure's messages are on it.
    let bad = tshark(
        &pcap,
        &[
            "-Y",
            "_ws.malformed || _ws.expert.severity == error",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "_ws.col.Info",
        ],
    );
    assert!(bad.trim().is_empty(), "malformed: {}", &bad[..bad.len().min(2000)]);
    let seen = |filter: &str| {
        !tshark(&pcap, &["-Y", filter, "-c", "1", "-T", "fields", "-e", "frame.number"])
            .trim()
            .is_empty()
    };
    for (what, filter) in [
        ("S1 Setup of the second eNB", "s1ap.procedureCode == 17 && s1ap.macroENB_ID == 2"),
        ("Paging", "s1ap.procedureCode == 10"),
        ("Path Switch Request", "s1ap.procedureCode == 3"),
        ("Handover Preparation", "s1ap.procedureCode == 0"),
        ("Handover Notify", "s1ap.procedureCode == 2"),
        ("eNB Status Transfer", "s1ap.procedureCode == 24"),
        ("UE Context Release", "s1ap.procedureCode == 23"),
        ("Release Access Bearers", "gtpv2.message_type == 170"),
        ("Downlink Data Notification", "gtpv2.message_type == 176"),
        ("Modify Bearer", "gtpv2.message_type == 34"),
        ("Delete Session", "gtpv2.message_type == 36"),
        ("Update Location", "diameter.cmd.code == 316"),
        ("Purge UE", "diameter.cmd.code == 321"),
    ] {
        assert!(seen(filter), "no {what} ({filter}) on the fabric");
    }
}
