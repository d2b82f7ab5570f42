//! Proves the wire format with Wireshark's dissectors: writes a pcap with every
//! GTPv2-C message (UDP 2123) and the GTP-U messages (UDP 2152), then asserts that
//! `tshark` decodes each frame as the intended message with nothing malformed and
//! no expert error.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use proto_gtpu::pcap::UdpPcap;
use proto_gtpu::{icmp, Gtpu, GTPU_PORT};
use proto_gtpv2c::{samples, GTPC_PORT};

/// Removes the pcap also when an assertion fails.
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark")
        .args(args)
        .output()
        .expect("tshark must be installed (make setup installs it)");
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn tshark_decodes_every_message() {
    let mme = Ipv4Addr::new(10, 77, 1, 20);
    let sgw = Ipv4Addr::new(10, 77, 1, 30);
    let enb = Ipv4Addr::new(10, 77, 0, 21);
    let mut pcap = UdpPcap::new();
    let mut add = |src: Ipv4Addr, dst: Ipv4Addr, port: u16, payload: &[u8]| {
        let ts = Duration::from_millis(pcap.len() as u64);
        let (s, d) = (SocketAddrV4::new(src, port), SocketAddrV4::new(dst, port));
        pcap.push(ts, s, d, payload).unwrap();
    };
    // (protocol column, text expected in the Info column), one per frame
    let mut frames: Vec<(&str, String)> = Vec::new();
    for m in samples::all() {
        let (s, d) = if m.msg.is_request() {
            (mme, sgw)
        } else {
            (sgw, mme)
        };
        add(s, d, GTPC_PORT, &m.encode().unwrap());
        frames.push(("GTPv2", m.msg.name().into()));
    }
    let ping = icmp::echo_request(
        Ipv4Addr::new(10, 45, 0, 2),
        Ipv4Addr::new(10, 45, 0, 1),
        1,
        1,
        b"corehop",
    )
    .unwrap();
    let gtpu = [
        (Gtpu::EchoRequest { seq: 1 }, "GTP", "Echo request"),
        (
            Gtpu::EchoResponse {
                seq: 1,
                recovery: 0,
            },
            "GTP",
            "Echo response",
        ),
        (
            Gtpu::ErrorIndication {
                teid: 0x1234,
                peer: IpAddr::V4(sgw),
            },
            "GTP",
            "Error indication",
        ),
        (Gtpu::EndMarker { teid: 0x1234 }, "GTP", "End marker"),
        // tshark shows the inner packet of a G-PDU: GTP <ICMP>.
        (
            Gtpu::GPdu {
                teid: 0x1234,
                seq: None,
                payload: &ping,
            },
            "GTP <ICMP>",
            "Echo (ping) request",
        ),
        (
            Gtpu::GPdu {
                teid: 0x1234,
                seq: Some(9),
                payload: &ping,
            },
            "GTP <ICMP>",
            "Echo (ping) request",
        ),
    ];
    for (m, proto, info) in gtpu {
        add(enb, sgw, GTPU_PORT, &m.encode().unwrap());
        frames.push((proto, info.into()));
    }

    let path =
        TempFile(std::env::temp_dir().join(format!("proto-gtpv2c-{}.pcap", std::process::id())));
    std::fs::write(&path.0, pcap.to_bytes()).unwrap();
    let file = path.0.to_str().unwrap();

    let verbose = tshark(&["-r", file, "-V"]);
    assert!(
        !verbose.contains("Malformed"),
        "malformed packet in:\n{verbose}"
    );
    assert!(verbose.contains("GPRS Tunneling Protocol V2"));
    let errors = tshark(&["-r", file, "-Y", "_ws.expert.severity == error"]);
    assert!(
        errors.trim().is_empty(),
        "expert errors:\n{errors}\n{verbose}"
    );

    let cols = tshark(&[
        "-r",
        file,
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-e",
        "_ws.col.Protocol",
        "-e",
        "_ws.col.Info",
    ]);
    let rows: Vec<&str> = cols.lines().collect();
    assert_eq!(rows.len(), frames.len(), "{cols}");
    for (row, (proto, info)) in rows.iter().zip(&frames) {
        let (p, i) = row.split_once('|').unwrap();
        assert_eq!(p, *proto, "row {row}");
        assert!(
            i.to_lowercase().contains(&info.to_lowercase()),
            "row {row}, want {info}"
        );
    }
    // Decoded field values, not only names: IMSI, APN, PAA and the S1-U eNB F-TEID.
    for needle in [
        "001010000000001",
        "APN (Access Point Name): internet",
        "10.45.0.2",
        "S1-U eNodeB GTP-U interface",
        "DNS Server IPv4 Address (0x000d)",
        "IPv4 link MTU size: 1400",
    ] {
        assert!(verbose.contains(needle), "{needle} not decoded:\n{verbose}");
    }
}
