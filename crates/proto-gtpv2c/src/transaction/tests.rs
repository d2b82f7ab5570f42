use super::*;
use crate::{cause, DeleteSessionResponse, Echo};

const T3: Duration = Duration::from_millis(1000);
const TIMERS: Timers = Timers { t3: T3, n3: 3 };

fn spgw() -> SocketAddr {
    "10.77.1.30:2123".parse().unwrap()
}

fn mme() -> SocketAddr {
    "10.77.1.20:2123".parse().unwrap()
}

fn echo_request(recovery: u8) -> Message {
    Message::EchoRequest(Echo { recovery })
}

/// Echo Response, sequence number `seq`, Recovery 7: header (no TEID) and one IE.
fn echo_response_bytes(seq: u8) -> [u8; 13] {
    [0x40, 2, 0, 9, 0, 0, seq, 0, 3, 0, 1, 0, 7]
}

/// Delete Session Request to TEID 0x11, sequence number `seq`, Linked EBI 5.
fn dsr_bytes(seq: u8) -> [u8; 17] {
    [0x48, 36, 0, 13, 0, 0, 0, 0x11, 0, 0, seq, 0, 73, 0, 1, 0, 5]
}

fn dsr_response() -> Message {
    Message::DeleteSessionResponse(DeleteSessionResponse {
        cause: cause::REQUEST_ACCEPTED,
        recovery: None,
    })
}

/// Whether the responder takes `bytes` for a retransmission it already answered.
fn duplicate(s: &mut Responder, now: Instant, peer: SocketAddr, bytes: &[u8]) -> bool {
    match s.on_request(now, peer, bytes) {
        Ok(Incoming::Duplicate(_)) => true,
        Ok(Incoming::Fresh(..)) => false,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn retransmits_every_t3_then_gives_up_after_n3() {
    let t0 = Instant::now();
    let mut r = Requester::new(TIMERS, 16);
    let (seq, bytes) = r.send(t0, spgw(), None, echo_request(5), "ue1").unwrap();
    assert_eq!(seq, 1);
    let first = [0x40, 1, 0, 9, 0, 0, 1, 0, 3, 0, 1, 0, 5];
    assert_eq!(bytes, first);
    assert_eq!(r.poll_timeout(), Some(t0 + T3));
    assert!(r.on_timeout(t0 + T3 - Duration::from_millis(1)).is_empty());
    for n in 1..=3 {
        let now = t0 + T3 * n;
        assert_eq!(
            r.on_timeout(now),
            [Timeout::Retransmit {
                peer: spgw(),
                seq: 1,
                bytes: first.to_vec()
            }],
            "retransmission {n}"
        );
        assert_eq!(r.poll_timeout(), Some(now + T3));
    }
    assert_eq!(
        r.on_timeout(t0 + T3 * 4),
        [Timeout::Expired {
            peer: spgw(),
            seq: 1,
            context: "ue1"
        }]
    );
    assert_eq!(r.poll_timeout(), None);
    // The response after giving up is ignored.
    assert_eq!(r.on_response(spgw(), &echo_response_bytes(1)), Ok(None));
}

#[test]
fn response_matches_by_sequence_number_and_peer() {
    let t0 = Instant::now();
    let mut r = Requester::new(TIMERS, 16);
    r.send(t0, spgw(), None, echo_request(5), 1u32).unwrap();
    let (seq, _) = r.send(t0, spgw(), None, echo_request(5), 2u32).unwrap();
    assert_eq!(seq, 2);
    // Right number, wrong peer; unknown number: both ignored, nothing forgotten.
    assert_eq!(r.on_response(mme(), &echo_response_bytes(2)), Ok(None));
    assert_eq!(r.on_response(spgw(), &echo_response_bytes(9)), Ok(None));
    let (ue, m) = r
        .on_response(spgw(), &echo_response_bytes(2))
        .unwrap()
        .unwrap();
    assert_eq!((ue, m.seq), (2, 2));
    assert_eq!(m.msg, Message::EchoResponse(Echo { recovery: 7 }));
    // A duplicate response finds its request gone; the other one still retransmits.
    assert_eq!(r.on_response(spgw(), &echo_response_bytes(2)), Ok(None));
    let due = r.on_timeout(t0 + T3);
    assert!(
        matches!(&due[..], [Timeout::Retransmit { seq: 1, .. }]),
        "{due:?}"
    );
}

#[test]
fn requester_rejects_bad_input_without_panicking() {
    let t0 = Instant::now();
    let mut r = Requester::new(TIMERS, 1);
    assert_eq!(
        r.send(t0, spgw(), Some(1), dsr_response(), ()),
        Err(Error::Unexpected(37, "a request to send"))
    );
    r.send(t0, spgw(), None, echo_request(0), ()).unwrap();
    assert_eq!(
        r.send(t0, spgw(), None, echo_request(0), ()),
        Err(Error::TooManyPending(1))
    );
    assert_eq!(
        r.on_response(spgw(), &dsr_bytes(1)),
        Err(Error::Unexpected(36, "a response"))
    );
    for garbage in [
        &b""[..],
        b"\x48",
        b"garbage!garbage!",
        &echo_response_bytes(1)[..12],
    ] {
        assert!(r.on_response(spgw(), garbage).is_err(), "{garbage:?}");
    }
}

#[test]
fn sequence_numbers_keep_the_command_bit_clear_and_skip_outstanding_ones() {
    let t0 = Instant::now();
    let mut r = Requester::new(TIMERS, 16);
    r.next_seq = SEQ_MASK;
    let (seq, bytes) = r.send(t0, spgw(), None, echo_request(0), ()).unwrap();
    assert_eq!((seq, &bytes[4..7]), (0x7f_ffff, &[0x7f, 0xff, 0xff][..]));
    assert_eq!(r.send(t0, spgw(), None, echo_request(0), ()).unwrap().0, 0);
    r.next_seq = SEQ_MASK;
    assert_eq!(r.send(t0, spgw(), None, echo_request(0), ()).unwrap().0, 1);
}

#[test]
fn duplicate_request_is_answered_from_the_cache() {
    let t0 = Instant::now();
    let mut s = Responder::new(TIMERS, 16);
    let Ok(Incoming::Fresh(id, m)) = s.on_request(t0, mme(), &dsr_bytes(3)) else {
        panic!("a fresh request")
    };
    assert_eq!(
        (id.peer, id.seq, id.msg_type, m.teid),
        (mme(), 3, 36, Some(0x11))
    );
    let sent = s
        .respond(t0, id, Some(0x22), dsr_response())
        .unwrap()
        .to_vec();
    // The response copies the request's sequence number.
    assert_eq!(
        sent,
        [0x48, 37, 0, 14, 0, 0, 0, 0x22, 0, 0, 3, 0, 2, 0, 2, 0, 16, 0]
    );
    let later = t0 + TIMERS.window() - Duration::from_millis(1);
    assert_eq!(
        s.on_request(later, mme(), &dsr_bytes(3)),
        Ok(Incoming::Duplicate(&sent[..]))
    );
    // Another peer, another number, or other content under the same number (a peer
    // that restarted its numbering): new requests.
    let other = "10.77.1.21:2123".parse().unwrap();
    assert!(!duplicate(&mut s, t0, other, &dsr_bytes(3)));
    assert!(!duplicate(&mut s, t0, mme(), &dsr_bytes(4)));
    let mut changed = dsr_bytes(3);
    changed[16] = 6;
    let Ok(Incoming::Fresh(id, _)) = s.on_request(t0, mme(), &changed) else {
        panic!("other content is a new request")
    };
    // Its answer replaces the old one.
    let sent = s.respond(t0, id, Some(0), dsr_response()).unwrap().to_vec();
    assert_eq!(
        s.on_request(t0, mme(), &changed),
        Ok(Incoming::Duplicate(&sent[..]))
    );
    assert!(!duplicate(&mut s, t0, mme(), &dsr_bytes(3)));
}

#[test]
fn cached_responses_expire_after_the_window_and_beyond_capacity() {
    let t0 = Instant::now();
    let mut s = Responder::new(TIMERS, 2);
    for seq in 1..=3 {
        let Ok(Incoming::Fresh(id, _)) = s.on_request(t0, mme(), &dsr_bytes(seq)) else {
            panic!()
        };
        s.respond(t0 + T3 * u32::from(seq), id, Some(0x22), dsr_response())
            .unwrap();
    }
    // Capacity 2: the oldest answer went first.
    assert_eq!(s.cache.len(), 2);
    let at = t0 + T3 * 2;
    assert!(!duplicate(&mut s, at, mme(), &dsr_bytes(1)));
    assert!(duplicate(&mut s, at, mme(), &dsr_bytes(2)));
    // Seq 2 was answered at 2 T3: kept until the window after it has passed.
    let end = t0 + T3 * 2 + TIMERS.window();
    assert!(!duplicate(&mut s, end, mme(), &dsr_bytes(2)));
    assert!(duplicate(&mut s, end, mme(), &dsr_bytes(3)));
    assert_eq!((s.cache.len(), s.order.len()), (1, 1));
}

#[test]
fn responder_rejects_bad_input_without_panicking() {
    let t0 = Instant::now();
    let mut s = Responder::new(TIMERS, 4);
    assert_eq!(
        s.on_request(t0, mme(), &echo_response_bytes(1)),
        Err(Error::Unexpected(2, "a request"))
    );
    for garbage in [&b""[..], b"\x48", b"garbage!garbage!", &dsr_bytes(1)[..16]] {
        assert!(s.on_request(t0, mme(), garbage).is_err(), "{garbage:?}");
    }
    // A header that parses but a body that does not: an error, and nothing cached.
    let mut bad = dsr_bytes(1);
    bad[14] = 2;
    assert!(s.on_request(t0, mme(), &bad).is_err());
    let Ok(Incoming::Fresh(id, _)) = s.on_request(t0, mme(), &dsr_bytes(1)) else {
        panic!()
    };
    assert_eq!(
        s.respond(t0, id, None, echo_request(0)),
        Err(Error::Unexpected(1, "a response"))
    );
}
