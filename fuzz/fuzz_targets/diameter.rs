//! Diameter: `Message::decode` of one message, the S6a/base views of what decodes,
//! and the stream `Framer` fed the same bytes in pseudo-random chunks.
//! Properties: decode(encode(m)) == m; the framer yields exactly the messages a
//! one-shot walk of the buffer yields, whatever the chunking.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_diameter::{base, message_length, s6a, Avp, Framer, Message};

fn walk_avps(avps: &[Avp], depth: usize) {
    for a in avps {
        let _ = a.as_u32();
        let _ = a.as_u64();
        let _ = a.as_str();
        let _ = a.as_address();
        if depth < 8 {
            if let Ok(children) = a.children() {
                walk_avps(&children, depth + 1);
            }
        }
    }
}

fn views(m: &Message) {
    let _ = m.name().to_string();
    walk_avps(&m.avps, 0);
    let _ = base::PeerCapabilities::from_message(m);
    let _ = base::ResultCode::from_message(m);
    let _ = base::origin_host(m);
    let _ = s6a::session_id(m);
    let _ = s6a::AuthInfoRequest::from_message(m);
    let _ = s6a::AuthInfoAnswer::from_message(m);
    let _ = s6a::UpdateLocationRequest::from_message(m);
    let _ = s6a::UpdateLocationAnswer::from_message(m);
}

/// The messages of `buf` up to the first error or incomplete tail.
fn one_shot(mut buf: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while let Ok(Some(len)) = message_length(buf) {
        if buf.len() < len {
            break;
        }
        match Message::decode(&buf[..len]) {
            Ok(m) => out.push(m),
            Err(_) => break,
        }
        buf = &buf[len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    if let Ok(m) = Message::decode(stream) {
        views(&m);
        let bytes = m.encode();
        let again = Message::decode(&bytes)
            .unwrap_or_else(|e| panic!("re-encoded {m:?} does not decode: {e}"));
        assert_eq!(again, m, "decode(encode(m)) != m");
    }

    let expected = one_shot(stream);
    for m in &expected {
        views(m);
    }
    let mut framer = Framer::new();
    let mut got = Vec::new();
    let mut rng = u32::from(seed) | 1;
    let mut rest = stream;
    'feed: while !rest.is_empty() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let n = (1 + (rng % 64) as usize).min(rest.len());
        framer.push(&rest[..n]);
        rest = &rest[n..];
        loop {
            match framer.next_message() {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    assert_eq!(got, expected, "framer and one-shot walk disagree");
});
