//! Proves the wire format with Wireshark's dissectors: writes a pcap with every
//! GTPv2-C message (UDP 2123) and the GTP-U messages (UDP 2152), then asserts that
//! `tshark` decodes each frame as the intended message with nothing malformed and
//! no expert error, and that the fields hold the values encoded.

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
    let gtpc = samples::all();
    for m in &gtpc {
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
        "DNS Server IPv6 Address Request (0x0003)",
        "IPv6: 2001:4860:4860::8888",
        "Packet filter component type identifier: IPv4 remote address type (16)",
    ] {
        assert!(verbose.contains(needle), "{needle} not decoded:\n{verbose}");
    }
    check_fields(file, &gtpc);
}

/// Fields of the GTPv2-C frames as tshark decodes them, one `|`-separated row per
/// frame, each field's occurrences joined by `,` in wire order.
const FIELDS: [&str; 17] = [
    "gtpv2.message_type",
    "gtpv2.teid",
    "gtpv2.seq",
    "gtpv2.cause",
    "gtpv2.ebi",
    "gtpv2.arp_pl",
    "gtpv2.f_teid_interface_type",
    "gtpv2.f_teid_gre_key",
    "gtpv2.pdn_type",
    "gtpv2.pdn_ipv6_len",
    "gtpv2.pdn_addr_and_prefix.ipv6",
    "gtpv2.pdn_addr_and_prefix.ipv4",
    "gtpv2.bearer_qos_label_qci",
    "gsm_a.gm.sm.tft.op_code",
    "gsm_a.gm.sm.ip4_address",
    "gsm_a.gm.sm.tft.protocol_header",
    "gsm_a.gm.sm.tft.port",
];

/// (field, value) pairs one frame must show.
type Expected = &'static [(&'static str, &'static str)];

fn field<'a>(row: &[&'a str], name: &str) -> &'a str {
    row[FIELDS.iter().position(|f| *f == name).unwrap()]
}

/// Header fields of every message, and what the messages added for paging, the
/// dedicated bearer, the handover and IPv6 carry.
fn check_fields(file: &str, gtpc: &[proto_gtpv2c::Gtpv2]) {
    let mut args = vec![
        "-r",
        file,
        "-Y",
        "gtpv2",
        "-T",
        "fields",
        "-E",
        "separator=|",
    ];
    args.extend(["-E", "occurrence=a", "-E", "aggregator=,"]);
    for f in FIELDS {
        args.extend(["-e", f]);
    }
    let out = tshark(&args);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), gtpc.len(), "{out}");
    for (row, m) in rows.iter().zip(gtpc) {
        let teid = m.teid.map_or(String::new(), |t| format!("{t:#010x}"));
        assert_eq!(
            field(row, "gtpv2.message_type"),
            m.msg.msg_type().to_string()
        );
        assert_eq!(field(row, "gtpv2.teid"), teid, "{row:?}");
        assert_eq!(
            field(row, "gtpv2.seq"),
            format!("{:#08x}", m.seq),
            "{row:?}"
        );
    }
    // (message type, sequence number) -> field values; every pair is one sample.
    #[rustfmt::skip]
    let want: &[((u8, u32), Expected)] = &[
        ((171, 5), &[("gtpv2.cause", "16")]),
        ((176, 0x10), &[("gtpv2.cause", "6"), ("gtpv2.ebi", "5"), ("gtpv2.arp_pl", "8")]),
        ((177, 0x10), &[("gtpv2.cause", "16")]),
        ((70, 6), &[("gtpv2.cause", "87")]),
        ((95, 0x11), &[
            ("gtpv2.ebi", "5,0"),
            ("gtpv2.f_teid_interface_type", "1,5"),
            ("gtpv2.f_teid_gre_key", "0x00000310,0x00000311"),
            ("gtpv2.bearer_qos_label_qci", "1"),
            ("gsm_a.gm.sm.tft.op_code", "1"),
            ("gsm_a.gm.sm.ip4_address", "10.45.0.1"),
            ("gsm_a.gm.sm.tft.protocol_header", "0x11"),
            ("gsm_a.gm.sm.tft.port", "5001"),
        ]),
        ((96, 0x11), &[
            ("gtpv2.cause", "16,16"),
            ("gtpv2.ebi", "6"),
            ("gtpv2.f_teid_interface_type", "0,1"),
            ("gtpv2.f_teid_gre_key", "0x00000410,0x00000310"),
        ]),
        ((34, 7), &[
            ("gtpv2.ebi", "5,6"),
            ("gtpv2.f_teid_interface_type", "10,0,0"),
            ("gtpv2.f_teid_gre_key", "0x00000101,0x00000420,0x00000421"),
        ]),
        ((99, 0x12), &[("gtpv2.ebi", "6")]),
        ((100, 0x12), &[("gtpv2.cause", "16,16"), ("gtpv2.ebi", "6")]),
        // The PDN Type IE, then the PAA's own type octet.
        ((32, 8), &[("gtpv2.pdn_type", "2,2"), ("gtpv2.pdn_ipv6_len", "0")]),
        ((33, 8), &[
            ("gtpv2.pdn_type", "2"),
            ("gtpv2.pdn_ipv6_len", "64"),
            ("gtpv2.pdn_addr_and_prefix.ipv6", "2001:db8:45:2::2"),
            ("gtpv2.pdn_addr_and_prefix.ipv4", ""),
        ]),
        ((32, 9), &[("gtpv2.pdn_type", "3,3"), ("gtpv2.pdn_addr_and_prefix.ipv4", "0.0.0.0")]),
        ((33, 9), &[
            ("gtpv2.pdn_type", "3"),
            ("gtpv2.pdn_ipv6_len", "64"),
            ("gtpv2.pdn_addr_and_prefix.ipv6", "2001:db8:45:3::2"),
            ("gtpv2.pdn_addr_and_prefix.ipv4", "10.45.0.3"),
        ]),
    ];
    for ((ty, seq), fields) in want {
        let i = gtpc
            .iter()
            .position(|m| m.msg.msg_type() == *ty && m.seq == *seq)
            .unwrap_or_else(|| panic!("no sample of type {ty}, sequence {seq}"));
        for (name, value) in *fields {
            assert_eq!(
                field(&rows[i], name),
                *value,
                "{name} of {}: {:?}",
                gtpc[i].msg.name(),
                rows[i]
            );
        }
    }
}
