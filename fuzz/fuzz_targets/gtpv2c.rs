//! GTPv2-C (S11) decoding. Property: decode(encode(m)) == m for whatever decodes and
//! re-encodes, and the header view agrees with the full decode.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = proto_gtpv2c::decode_header(data);
    let Ok(m) = proto_gtpv2c::decode(data) else {
        return;
    };
    assert!(header.is_ok(), "decode ok but decode_header failed");
    let _ = (m.msg.name(), m.msg.is_request(), m.msg.msg_type());
    if let Ok(bytes) = m.encode() {
        let again = proto_gtpv2c::decode(&bytes)
            .unwrap_or_else(|e| panic!("re-encoded {m:?} does not decode: {e}"));
        assert_eq!(again, m, "decode(encode(m)) != m");
    }
});
