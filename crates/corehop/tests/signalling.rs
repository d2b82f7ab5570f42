//! Migration in the middle of signalling (`corehop signalling`, plans/signalling.toml): a
//! sample of 100 UEs (the plan's 1000 in results/signalling) run the `mixed` traffic model
//! (idle and back, paging on downlink from the pdn host,
//! periodic and normal TAU, X2 and S1 handover between two eNBs, detach and re-attach) at
//! 10 procedures/s while the MME, the SPGW and the HSS migrate one after another, with
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
        // A sample of the plan's 1000 UEs at 50 procedures/s (its runs, in a release
        // build, are in results/signalling): this debug build's NAS crypto (Milenage, AES,
        // HMAC) is many times slower, and at the plan's load the functions fall behind.
        "--ues",
        "100",
        "--procedures-per-s",
        "10",
        "--settle-s",
        "8",
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
        assert_eq!(run["contexts"], 100, "{run}");
        assert_eq!(run["tunnels"], 100, "{run}");
        assert_eq!(run["disagreements"].as_array().unwrap().len(), 0, "{run}");
        let moved: Vec<&str> = run["moves"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["function"].as_str().unwrap())
            .collect();
        assert_eq!(moved, ["mme", "spgw", "hss"], "{run}");
        for m in run["moves"].as_array().unwrap() {
            assert!(
                m["during"]["count"].as_u64().unwrap() > 0,
                "nothing in flight: {m}"
            );
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

    // The wire, in one pass: nothing malformed, and every procedure's messages are on it
    // (between hosts: what a function sends to one on its own host stays off the fabric).
    let fields = tshark(
        &pcap,
        &[
            "-Y",
            "s1ap || gtpv2 || diameter || _ws.malformed || _ws.expert.severity == error",
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-e",
            "frame.number",
            "-e",
            "s1ap.procedureCode",
            "-e",
            "gtpv2.message_type",
            "-e",
            "diameter.cmd.code",
            "-e",
            "_ws.malformed",
            "-e",
            "_ws.expert.severity",
            "-e",
            "s1ap.macroENB_ID",
        ],
    );
    let rows: Vec<Vec<&str>> = fields.lines().map(|l| l.split('\t').collect()).collect();
    let bad: Vec<&str> = fields
        .lines()
        .zip(&rows)
        .filter(|(_, r)| {
            r.get(4).is_some_and(|m| !m.is_empty())
                || r.get(5)
                    .is_some_and(|s| s.split(',').any(|v| v == "8388608"))
        })
        .map(|(l, _)| l)
        .take(5)
        .collect();
    assert!(bad.is_empty(), "malformed or in error: {bad:?}");
    let has = |col: usize, v: &str| {
        rows.iter()
            .any(|r| r.get(col).is_some_and(|c| c.split(',').any(|x| x == v)))
    };
    for (what, col, v) in [
        ("S1 Setup of the second eNB", 6, "000020"),
        ("Paging", 1, "10"),
        ("Path Switch Request", 1, "3"),
        ("Handover Preparation", 1, "0"),
        ("Handover Notify", 1, "2"),
        ("eNB Status Transfer", 1, "24"),
        ("UE Context Release", 1, "23"),
        ("Release Access Bearers", 2, "170"),
        ("Downlink Data Notification", 2, "176"),
        ("Modify Bearer", 2, "34"),
        ("Update Location", 3, "316"),
        ("Purge UE", 3, "321"),
    ] {
        assert!(has(col, v), "no {what} on the fabric");
    }
}
