//! GTP-U (S1-U) decoding and the inner ICMP echo parser the SPGW uses.
//! Properties: decode(encode(m)) == m; parse_echo(encode(e)) == e.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_gtpu::icmp;

fuzz_target!(|data: &[u8]| {
    let _ = proto_gtpu::decode_header(data);
    if let Ok(m) = proto_gtpu::decode(data) {
        if let Ok(bytes) = m.encode() {
            let again = proto_gtpu::decode(&bytes)
                .unwrap_or_else(|e| panic!("re-encoded {m:?} does not decode: {e}"));
            assert_eq!(again, m, "decode(encode(m)) != m");
        }
        if let proto_gtpu::Gtpu::GPdu { payload, .. } = m {
            echo(payload);
        }
    }
    echo(data);
});

fn echo(packet: &[u8]) {
    let _ = icmp::ipv4_destination(packet);
    let _ = icmp::ipv4_source(packet);
    if let Ok(e) = icmp::parse_echo(packet) {
        let _ = e.reply();
        if let Ok(bytes) = e.encode() {
            let again = icmp::parse_echo(&bytes)
                .unwrap_or_else(|err| panic!("re-encoded {e:?} does not parse: {err}"));
            assert_eq!(again, e, "parse_echo(encode(e)) != e");
        }
    }
}
