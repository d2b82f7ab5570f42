//! Proves the wire format with Wireshark's dissector: every message kind is written into a
//! pcap as IPv4/TCP port 3868 segments and `tshark -V` must decode each with the expected
//! command name, nothing malformed and no expert errors.

use crate::server_tests::server_exchange;
use crate::tests::{all_messages, error_pairs, user_unknown_pair};
use crate::Message;
use etherparse::PacketBuilder;
use pcap_file::pcap::{PcapPacket, PcapWriter};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const MME: ([u8; 4], u16, [u8; 6]) = ([10, 77, 1, 20], 40_000, [2, 0, 0, 0, 0, 0x20]);
const HSS: ([u8; 4], u16, [u8; 6]) = ([10, 77, 1, 10], 3868, [2, 0, 0, 0, 0, 0x10]);

/// Removes the capture even when an assertion fails.
struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A TCP connection MME -> HSS: handshake, then each message as one segment in its direction
/// (requests from the MME, answers from the HSS), with consistent seq/ack numbers so tshark's
/// TCP analysis has nothing to flag.
fn write_pcap(path: &PathBuf, msgs: &[Message]) {
    let mut w =
        PcapWriter::new(std::fs::File::create(path).expect("create pcap")).expect("pcap header");
    let (mut seq_c, mut seq_s) = (1000u32, 5000u32);
    let mut t = Duration::from_secs(1_700_000_000);
    let mut emit = |from_client: bool, flags: &str, seq: u32, ack: u32, payload: &[u8]| {
        let (src, dst) = if from_client { (MME, HSS) } else { (HSS, MME) };
        let mut b = PacketBuilder::ethernet2(src.2, dst.2)
            .ipv4(src.0, dst.0, 64)
            .tcp(src.1, dst.1, seq, 65535);
        if flags.contains('S') {
            b = b.syn();
        }
        if flags.contains('A') {
            b = b.ack(ack);
        }
        if flags.contains('P') {
            b = b.psh();
        }
        let mut frame = Vec::new();
        b.write(&mut frame, payload).expect("build frame");
        t += Duration::from_millis(1);
        w.write_packet(&PcapPacket::new(t, frame.len() as u32, &frame))
            .expect("write packet");
    };
    emit(true, "S", seq_c, 0, &[]);
    emit(false, "SA", seq_s, seq_c + 1, &[]);
    seq_c += 1;
    seq_s += 1;
    emit(true, "A", seq_c, seq_s, &[]);
    for m in msgs {
        let bytes = m.encode();
        // Each message travels from the node its Origin-Host names: the HSS's CLR and the
        // MME's CLA go the other way round.
        let origin = m
            .find(crate::codes::AVP_ORIGIN_HOST, 0)
            .and_then(|a| a.as_str().ok());
        if origin.is_some_and(|h| h.starts_with("mme")) {
            emit(true, "AP", seq_c, seq_s, &bytes);
            seq_c += bytes.len() as u32;
        } else {
            emit(false, "AP", seq_s, seq_c, &bytes);
            seq_s += bytes.len() as u32;
        }
    }
}

fn tshark(args: &[&str]) -> Option<String> {
    let out = Command::new("tshark").args(args).output().ok()?;
    assert!(
        out.status.success(),
        "tshark {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn tshark_decodes_every_message() {
    if Command::new("tshark").arg("--version").output().is_err() {
        eprintln!("SKIPPED: tshark not installed, wire format not checked by Wireshark");
        return;
    }
    // Requests precede their answers on the wire.
    let mut msgs = all_messages();
    for pair in msgs.chunks_mut(2) {
        if !pair[0].is_request() {
            pair.swap(0, 1);
        }
    }
    msgs.extend(user_unknown_pair());
    msgs.extend(error_pairs());
    // What the server peer itself writes: CEA, DWA, DPA and the CEA refusing a CER without S6a.
    msgs.extend(server_exchange());
    let file = TempFile(
        std::env::temp_dir().join(format!("corehop-diameter-{}.pcap", std::process::id())),
    );
    write_pcap(&file.0, &msgs);
    let path = file.0.to_str().expect("utf-8 temp path");

    let verbose = tshark(&["-r", path, "-V", "-Y", "diameter"]).expect("tshark runs");
    assert!(
        !verbose.contains("Malformed"),
        "malformed packet:\n{verbose}"
    );

    let info = tshark(&[
        "-r",
        path,
        "-Y",
        "diameter",
        "-T",
        "fields",
        "-e",
        "_ws.col.Info",
    ])
    .expect("tshark");
    let lines: Vec<&str> = info.lines().collect();
    let base_protocol = [
        "cmd=Capabilities-Exchange Request",
        "cmd=Capabilities-Exchange Answer",
        "cmd=Device-Watchdog Request",
        "cmd=Device-Watchdog Answer",
        "cmd=Disconnect-Peer Request",
        "cmd=Disconnect-Peer Answer",
    ];
    let s6a = [
        "cmd=3GPP-Authentication-Information Request",
        "cmd=3GPP-Authentication-Information Answer",
        "cmd=3GPP-Update-Location Request",
        "cmd=3GPP-Update-Location Answer",
        "cmd=3GPP-Purge-UE Request",
        "cmd=3GPP-Purge-UE Answer",
        "cmd=3GPP-Cancel-Location Request",
        "cmd=3GPP-Cancel-Location Answer",
        "cmd=3GPP-Authentication-Information Request",
        "cmd=3GPP-Authentication-Information Answer",
        "cmd=3GPP-Authentication-Information Request",
        "cmd=3GPP-Authentication-Information Answer",
        "cmd=3GPP-Notify Request",
        "cmd=3GPP-Notify Answer(323) flags=-PE-",
    ];
    // The server peer's exchange: the base protocol again, then the refused CER.
    let expected: Vec<&str> = [
        &base_protocol[..],
        &s6a,
        &base_protocol,
        &base_protocol[..2],
    ]
    .concat();
    assert_eq!(
        lines.len(),
        expected.len(),
        "one Diameter message per frame:\n{info}"
    );
    for (line, want) in lines.iter().zip(expected) {
        assert!(line.contains(want), "expected {want:?} in {line:?}");
    }
    // S6a AVPs must be decoded by name, inside their groups.
    for avp in [
        "E-UTRAN-Vector",
        "KASME",
        "Subscription-Data",
        "APN-Configuration",
        "Service-Selection: internet",
        "QoS-Class-Identifier: QCI_9",
        "Max-Requested-Bandwidth-UL",
        "Visited-PLMN-Id",
        "Experimental-Result-Code: DIAMETER_ERROR_USER_UNKNOWN (5001)",
        "Result-Code: DIAMETER_MISSING_AVP (5005)",
        "Result-Code: DIAMETER_COMMAND_UNSUPPORTED (3001)",
        "Result-Code: DIAMETER_NO_COMMON_APPLICATION (5010)",
        "Cancellation-Type: MME_UPDATE_PROCEDURE (0)",
        "CLR-Flags",
        "PUA-Flags",
    ] {
        assert!(
            verbose.contains(avp),
            "tshark output lacks {avp:?}:\n{verbose}"
        );
    }
    if std::env::var_os("COREHOP_KEEP_PCAP").is_some() {
        let _ = std::fs::copy(path, "/tmp/corehop-diameter-kept.pcap");
    }
    let errors = tshark(&[
        "-r",
        path,
        "-Y",
        "_ws.expert.severity == error || _ws.malformed",
    ])
    .expect("tshark");
    assert!(errors.trim().is_empty(), "expert errors:\n{errors}");
    let warnings =
        tshark(&["-r", path, "-Y", "_ws.expert.severity >= warning", "-V"]).expect("tshark");
    assert!(warnings.trim().is_empty(), "expert warnings:\n{warnings}");
}
