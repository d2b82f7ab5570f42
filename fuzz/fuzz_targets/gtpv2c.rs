//! GTPv2-C (S11) decoding. Property: decode(encode(m)) == m for whatever decodes and
//! re-encodes, and the header view agrees with the full decode. Transactions take the
//! same bytes without panicking, and a request once answered is then a duplicate.
#![no_main]
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use proto_gtpv2c::transaction::{Incoming, Requester, Responder, Timers};
use proto_gtpv2c::{Echo, Message};

fuzz_target!(|data: &[u8]| {
    let timers = Timers {
        t3: Duration::from_secs(1),
        n3: 3,
    };
    let (now, peer) = (Instant::now(), "10.77.1.20:2123".parse().unwrap());
    let _ = Requester::<()>::new(timers, 1).on_response(peer, data);
    let mut responder = Responder::new(timers, 1);
    if let Ok(Incoming::Fresh(id, _)) = responder.on_request(now, peer, data) {
        let sent = responder
            .respond(now, id, None, Message::EchoResponse(Echo { recovery: 0 }))
            .expect("an Echo Response always encodes")
            .to_vec();
        let again = responder.on_request(now, peer, data);
        assert_eq!(
            again,
            Ok(Incoming::Duplicate(&sent[..])),
            "not answered from the cache"
        );
    }
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
