//! S1AP-PDU decoding (APER via oxirush-s1ap, wrapped by `proto_s1ap::decode`).
//! Property: whatever decodes and can be re-encoded decodes back to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = proto_s1ap::decode(data) else {
        return;
    };
    let _ = msg.stream();
    if let Ok(bytes) = proto_s1ap::encode(&msg) {
        let again = proto_s1ap::decode(&bytes)
            .unwrap_or_else(|e| panic!("re-encoded {msg:?} does not decode: {e}"));
        assert_eq!(again, msg, "decode(encode(m)) != m");
    }
});
