//! Proves the wire format with Wireshark's dissector: every message is written into a
//! pcap, plain and protected (EIA2 with EEA0, so that `nas-eps.null_decipher` shows the
//! ciphered ones), with the short SERVICE REQUEST, on a user link type decoded as
//! `nas-eps`; `tshark` must name each message, find nothing malformed and no expert
//! error.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use proto_sctp::pcap::{PcapWriter, LINKTYPE_USER0};

use crate::msg::{self, tests::samples, Nas};
use crate::{Direction, NasSecurity, SecurityHeader};

const PREFS: [&str; 4] = [
    "-o",
    r#"uat:user_dlts:"User 0 (DLT=147)","nas-eps","0","","0","""#,
    "-o",
    "nas-eps.null_decipher:TRUE",
];

/// Removes the capture even when an assertion fails.
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A pcap of one NAS PDU per record, on the user link type tshark maps to `nas-eps`.
fn pcap(pdus: &[Vec<u8>]) -> Vec<u8> {
    let mut w = PcapWriter::with_linktype(LINKTYPE_USER0);
    for (i, p) in pdus.iter().enumerate() {
        w.record(Duration::from_secs(1_700_000_000 + i as u64), p);
    }
    w.take()
}

fn tshark(file: &str, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(PREFS)
        .args(["-r", file])
        .args(args)
        .output()
        .expect("tshark must be installed (make setup installs it)");
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The message name tshark shows in its Info column.
fn name(nas: &Nas) -> &'static str {
    match nas {
        Nas::AttachRequest { .. } => "Attach request",
        Nas::AuthenticationRequest { .. } => "Authentication request",
        Nas::AuthenticationResponse { .. } => "Authentication response",
        Nas::AuthenticationFailure { .. } => "Authentication failure",
        Nas::AuthenticationReject => "Authentication reject",
        Nas::SecurityModeCommand { .. } => "Security mode command",
        Nas::SecurityModeComplete => "Security mode complete",
        Nas::SecurityModeReject { .. } => "Security mode reject",
        Nas::AttachAccept { .. } => "Attach accept",
        Nas::AttachComplete { .. } => "Attach complete",
        Nas::AttachReject { .. } => "Attach reject",
        Nas::DetachRequest { .. } | Nas::NetworkDetachRequest { .. } => "Detach request",
        Nas::DetachAccept => "Detach accept",
        Nas::ServiceRequest { .. } => "Service request",
        Nas::ServiceReject { .. } => "Service reject",
        Nas::TrackingAreaUpdateRequest { .. } => "Tracking area update request",
        Nas::TrackingAreaUpdateAccept { .. } => "Tracking area update accept",
        Nas::TrackingAreaUpdateComplete => "Tracking area update complete",
        Nas::TrackingAreaUpdateReject { .. } => "Tracking area update reject",
        Nas::IdentityRequest { .. } => "Identity request",
        Nas::IdentityResponse { .. } => "Identity response",
        Nas::GutiReallocationCommand { .. } => "GUTI reallocation command",
        Nas::GutiReallocationComplete => "GUTI reallocation complete",
        Nas::EmmStatus { .. } => "EMM status",
        Nas::ActivateDedicatedBearerRequest { .. } => {
            "Activate dedicated EPS bearer context request"
        }
        Nas::ActivateDedicatedBearerAccept { .. } => "Activate dedicated EPS bearer context accept",
        Nas::Other { .. } => "",
    }
}

#[test]
fn tshark_decodes_every_message() {
    let kasme = [0x5a; 32];
    let mut mme = NasSecurity::new(kasme, 1, 0, 2).unwrap();
    let mut ue = NasSecurity::new(kasme, 1, 0, 2).unwrap();
    let mut pdus = Vec::new();
    let mut names = Vec::new();
    for (plain, dir, nas) in samples() {
        let sec = match dir {
            Direction::Uplink => &mut ue,
            Direction::Downlink => &mut mme,
        };
        // The header each message travels with in the lab.
        let sht = match nas {
            Nas::SecurityModeCommand { .. } => SecurityHeader::IntegrityNewContext,
            Nas::SecurityModeComplete => SecurityHeader::IntegrityCipheredNewContext,
            Nas::TrackingAreaUpdateRequest { .. } => SecurityHeader::Integrity,
            _ => SecurityHeader::IntegrityCiphered,
        };
        let protected = sec.protect(&plain, sht, dir).unwrap();
        pdus.extend([plain, protected]);
        names.extend([name(&nas); 2]);
    }
    let attach = msg::attach_request("001010000000001", &[0xe0, 0xe0], &Default::default());
    let by_guti =
        msg::attach_request_by_guti(&msg::tests::GUTI, &[0xe0, 0xe0], &Default::default());
    pdus.extend([
        attach.unwrap(),
        by_guti.unwrap(),
        ue.service_request().unwrap(),
    ]);
    names.extend(["Attach request", "Attach request", "Service request"]);
    // The PDN address of IPv6 and IPv4v6 PDN connections (24.301 §9.9.4.9).
    let iid = [0, 0, 0, 0, 0, 0, 0, 1];
    for pdn_address in [
        msg::PdnAddress::Ipv6InterfaceId(iid),
        msg::PdnAddress::Ipv4v6 {
            ipv6_interface_id: iid,
            ipv4: [10, 45, 0, 7],
        },
    ] {
        let accept = msg::attach_accept(&msg::AttachAcceptParams {
            guti: msg::tests::GUTI,
            tai_plmn: msg::tests::PLMN,
            tacs: vec![1],
            t3412: 0x49,
            ebi: 5,
            pti: 1,
            qci: 9,
            apn: "internet".into(),
            pdn_address,
        });
        pdus.push(accept.unwrap());
        names.push("Attach accept");
    }
    // A GBR dedicated bearer for UDP with 10.45.0.1:5001, and its accept.
    let qos = msg::EpsQos {
        qci: 1,
        mbr_uplink_kbps: 128,
        mbr_downlink_kbps: 128,
        gbr_uplink_kbps: 64,
        gbr_downlink_kbps: 64,
    };
    let tft = vec![
        0x21, 0x31, 10, 14, 0x10, 10, 45, 0, 1, 255, 255, 255, 255, 0x30, 17, 0x50, 0x13, 0x89,
    ];
    // As they travel: inside a protected EMM header (a plain ESM message with a bearer
    // identity is no NAS PDU of its own to Wireshark).
    let sht = SecurityHeader::IntegrityCiphered;
    let request = msg::activate_dedicated_bearer_request(6, 5, &qos, tft).unwrap();
    let accept = msg::activate_dedicated_bearer_accept(6).unwrap();
    pdus.extend([
        mme.protect(&request, sht, Direction::Downlink).unwrap(),
        ue.protect(&accept, sht, Direction::Uplink).unwrap(),
    ]);
    names.extend([
        "Activate dedicated EPS bearer context request",
        "Activate dedicated EPS bearer context accept",
    ]);

    let path =
        TempFile(std::env::temp_dir().join(format!("proto-nas-{}.pcap", std::process::id())));
    std::fs::write(&path.0, pcap(&pdus)).unwrap();
    let file = path.0.to_str().unwrap();

    let verbose = tshark(file, &["-V"]);
    assert!(
        !verbose.contains("Malformed"),
        "malformed packet in:\n{verbose}"
    );
    let errors = tshark(file, &["-Y", "_ws.expert.severity == error"]);
    assert!(
        errors.trim().is_empty(),
        "expert errors:\n{errors}\n{verbose}"
    );
    let cols = tshark(
        file,
        &[
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "_ws.col.Protocol",
            "-e",
            "_ws.col.Info",
        ],
    );
    let rows: Vec<&str> = cols.lines().collect();
    assert_eq!(rows.len(), names.len(), "{cols}");
    for (row, name) in rows.iter().zip(&names) {
        let (p, info) = row.split_once('|').unwrap();
        assert_eq!(p, "NAS-EPS", "row {row}");
        assert!(info.starts_with(name), "row {row}, want {name}");
    }
    // Decoded values, not only names.
    for needle in [
        "EPS update type value: TA updating (0)",
        "EPS update type value: Periodic updating (3)",
        "Tracking area identity - Last visited registered TAI",
        "EBI(6): BEARER CONTEXT-ACTIVE",
        "Tracking area code(TAC): 2",
        "M-TMSI: 7 (0x00000007)",
        "Detach Type: Re-attach required (1)",
        "Detach Type: Re-attach not required (2)",
        "Cause: UE identity cannot be derived by the network (9)",
        "Identity type 2: IMSI (1)",
        "Mobile identity - IMSI (001010000000001)",
        "Short MAC - Message authentication code (short)",
        "PDN type: IPv6 (2)",
        "PDN type: IPv4v6 (3)",
        "PDN IPv6 if id: ::0:0:0:1",
        "PDN IPv4: 10.45.0.7",
        "Linked EPS bearer identity: EPS bearer identity value 5 (5)",
        "Quality of Service Class Identifier (QCI): QCI 1 (1)",
        "Guaranteed bit rate for downlink: 64 kbps",
        "Maximum bit rate for uplink: 128 kbps",
        "Port: 5001",
    ] {
        assert!(verbose.contains(needle), "{needle} not decoded:\n{verbose}");
    }
}
