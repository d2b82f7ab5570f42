//! The server peer driven with bytes, as an MME's would arrive on the HSS's socket.

use crate::base::{self, PeerCapabilities, ResultCode};
use crate::codes::*;
use crate::s6a::AuthInfoAnswer;
use crate::server::*;
use crate::tests::{air, hss_id, mme_id};
use crate::{Avp, Message, FLAG_ERROR, FLAG_REQUEST};
use std::time::{Duration, Instant};

fn server(t0: Instant) -> ServerPeer {
    ServerPeer::new(ServerConfig::new(hss_id()), t0)
}

fn sent(p: &mut ServerPeer) -> Vec<Message> {
    std::iter::from_fn(|| p.poll_transmit())
        .map(|b| Message::decode(&b).unwrap())
        .collect()
}

fn events(p: &mut ServerPeer) -> Vec<ServerEvent> {
    std::iter::from_fn(|| p.poll_event()).collect()
}

fn with_ids(mut m: Message, hop_by_hop: u32, end_to_end: u32) -> Message {
    m.hop_by_hop = hop_by_hop;
    m.end_to_end = end_to_end;
    m
}

fn cer() -> Message {
    with_ids(base::cer(&mme_id()), 0x1111, 0x2222)
}

fn result(m: &Message) -> ResultCode {
    ResultCode::from_message(m).unwrap()
}

/// A server past its CEA.
fn open(t0: Instant) -> ServerPeer {
    let mut p = server(t0);
    p.handle_input(&cer().encode(), t0);
    assert_eq!(p.state(), ServerState::Open);
    sent(&mut p);
    events(&mut p);
    p
}

/// Client request and server answer, in wire order, of a CER/CEA, DWR/DWA and DPR/DPA on
/// one connection and of a CER without S6a refused with 5010 on another.
pub(crate) fn server_exchange() -> Vec<Message> {
    let t0 = Instant::now();
    let mut p = server(t0);
    let mut out = vec![];
    for req in [
        cer(),
        with_ids(base::dwr(&mme_id()), 2, 2),
        with_ids(base::dpr(&mme_id(), DISCONNECT_CAUSE_REBOOTING), 3, 3),
    ] {
        p.handle_input(&req.encode(), t0);
        out.push(req);
        out.extend(sent(&mut p));
    }
    let mut p = server(t0);
    let req = no_s6a_cer();
    p.handle_input(&req.encode(), t0);
    out.push(req);
    out.extend(sent(&mut p));
    out
}

fn no_s6a_cer() -> Message {
    let mut cer = cer();
    cer.avps.retain(|a| {
        a.code != AVP_AUTH_APPLICATION_ID && a.code != AVP_VENDOR_SPECIFIC_APPLICATION_ID
    });
    cer.with(Avp::u32(AVP_AUTH_APPLICATION_ID, 0, 4))
}

#[test]
fn cer_gets_cea_with_identity_and_s6a() {
    let t0 = Instant::now();
    let mut p = server(t0);
    assert_eq!(p.state(), ServerState::WaitCer);
    let req = cer().encode();
    p.handle_input(&req, t0);
    let bytes = p.poll_transmit().expect("CEA");
    assert!(p.poll_transmit().is_none());
    // Header: version 1, no R/P/E flags, command 257, application 0, the CER's ids.
    assert_eq!(bytes[0], 1);
    assert_eq!(&bytes[4..8], &[0, 0, 1, 1]);
    assert_eq!(&bytes[8..12], &[0; 4]);
    assert_eq!(&bytes[12..20], &req[12..20]);
    let cea = Message::decode(&bytes).unwrap();
    assert_eq!(result(&cea), ResultCode::SUCCESS);
    let caps = PeerCapabilities::from_message(&cea).unwrap();
    assert_eq!(caps.origin_host, "hss.corehop.lab");
    assert_eq!(caps.origin_realm, "corehop.lab");
    assert_eq!(caps.host_ips, vec![hss_id().host_ip]);
    assert_eq!(caps.product_name.as_deref(), Some("corehop"));
    assert!(cea.find(AVP_VENDOR_ID, 0).is_some());
    assert_eq!(caps.auth_app_ids, vec![APP_S6A, APP_S6A]);
    let vsai = cea
        .require(AVP_VENDOR_SPECIFIC_APPLICATION_ID, 0, "VSAI")
        .unwrap();
    assert_eq!(
        vsai.children().unwrap(),
        base::s6a_vendor_specific_app_id().children().unwrap()
    );
    assert_eq!(p.state(), ServerState::Open);
    assert!(
        matches!(events(&mut p).as_slice(), [ServerEvent::Open(c)] if c.origin_host == "mme.corehop.lab")
    );
    assert_eq!(p.remote().unwrap().origin_host, "mme.corehop.lab");
}

#[test]
fn cer_without_s6a_gets_5010_and_closes() {
    let t0 = Instant::now();
    let mut p = server(t0);
    p.handle_input(&no_s6a_cer().encode(), t0);
    let out = sent(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].command_code, CMD_CAPABILITIES_EXCHANGE);
    assert_eq!(
        result(&out[0]),
        ResultCode::Base(DIAMETER_NO_COMMON_APPLICATION)
    );
    // Our applications still go along as a hint (RFC 6733 5.3).
    assert!(PeerCapabilities::from_message(&out[0])
        .unwrap()
        .supports_s6a());
    assert_eq!(p.state(), ServerState::Closed);
    assert!(
        matches!(events(&mut p).as_slice(), [ServerEvent::Closed(r)] if r.contains("without S6a"))
    );
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn cer_missing_origin_host_gets_5005_and_closes() {
    let t0 = Instant::now();
    let mut p = server(t0);
    let mut bad = cer();
    bad.avps.retain(|a| a.code != AVP_ORIGIN_HOST);
    p.handle_input(&bad.encode(), t0);
    let out = sent(&mut p);
    assert_eq!(result(&out[0]), ResultCode::Base(DIAMETER_MISSING_AVP));
    assert!(out[0].find(AVP_ERROR_MESSAGE, 0).is_some());
    assert_eq!(p.state(), ServerState::Closed);
}

#[test]
fn dwr_gets_dwa_with_its_ids() {
    let t0 = Instant::now();
    let mut p = open(t0);
    p.handle_input(&with_ids(base::dwr(&mme_id()), 7, 8).encode(), t0);
    let out = sent(&mut p);
    assert_eq!(out.len(), 1);
    assert_eq!(
        (
            out[0].command_code,
            out[0].is_request(),
            out[0].hop_by_hop,
            out[0].end_to_end
        ),
        (CMD_DEVICE_WATCHDOG, false, 7, 8)
    );
    assert_eq!(result(&out[0]), ResultCode::SUCCESS);
    assert_eq!(p.state(), ServerState::Open);
    assert!(events(&mut p).is_empty());
}

#[test]
fn dpr_gets_dpa_then_closed() {
    let t0 = Instant::now();
    let mut p = open(t0);
    let dpr = with_ids(base::dpr(&mme_id(), DISCONNECT_CAUSE_REBOOTING), 9, 10);
    p.handle_input(&dpr.encode(), t0);
    let out = sent(&mut p);
    assert_eq!(
        (out[0].command_code, out[0].is_request(), out[0].hop_by_hop),
        (CMD_DISCONNECT_PEER, false, 9)
    );
    assert_eq!(result(&out[0]), ResultCode::SUCCESS);
    assert_eq!(p.state(), ServerState::Closed);
    assert!(matches!(
        events(&mut p).as_slice(),
        [ServerEvent::Closed(_)]
    ));
    // Nothing more is read once closed.
    p.handle_input(&with_ids(base::dwr(&mme_id()), 11, 11).encode(), t0);
    assert!(sent(&mut p).is_empty());
    assert!(events(&mut p).is_empty());
}

#[test]
fn requests_before_cer_close_unanswered() {
    // RFC 6733 5.6.1: anything but a CER on a new connection closes it.
    let t0 = Instant::now();
    for early in [
        with_ids(air().to_message(), 1, 1),
        with_ids(base::dwr(&mme_id()), 1, 1),
    ] {
        let mut p = server(t0);
        p.handle_input(&early.encode(), t0);
        assert!(sent(&mut p).is_empty());
        assert_eq!(p.state(), ServerState::Closed);
        assert!(
            matches!(events(&mut p).as_slice(), [ServerEvent::Closed(r)] if r.contains("before CER"))
        );
    }
}

#[test]
fn s6a_request_after_cer_goes_to_the_application() {
    let t0 = Instant::now();
    let mut p = open(t0);
    let air = with_ids(air().to_message(), 0xa0a0_a0a0, 0x0b0b_0b0b);
    let wire = air.encode();
    p.handle_input(&wire, t0);
    assert!(sent(&mut p).is_empty());
    let ev = events(&mut p);
    let [ServerEvent::Request(req)] = ev.as_slice() else {
        panic!("expected one request, got {ev:?}");
    };
    assert_eq!(req, &air);
    let aia = AuthInfoAnswer {
        session_id: "mme.corehop.lab;1;1".into(),
        origin_host: "hss.corehop.lab".into(),
        origin_realm: "corehop.lab".into(),
        result: ResultCode::USER_UNKNOWN,
        vectors: vec![],
    }
    .to_message(req);
    p.answer(aia);
    let bytes = p.poll_transmit().expect("AIA");
    assert_eq!(bytes[4] & FLAG_REQUEST, 0);
    assert_eq!(
        &bytes[5..20],
        &wire[5..20],
        "command, application and ids echoed"
    );
}

#[test]
fn other_applications_and_base_commands_get_errors() {
    let t0 = Instant::now();
    let mut p = open(t0);
    let gx = with_ids(Message::request(272, 16_777_238, true), 1, 1);
    let odd = with_ids(Message::request(999, APP_COMMON, false), 2, 2);
    p.handle_input(&[gx.encode(), odd.encode()].concat(), t0);
    let out = sent(&mut p);
    assert_eq!(
        result(&out[0]),
        ResultCode::Base(DIAMETER_APPLICATION_UNSUPPORTED)
    );
    assert_eq!(
        result(&out[1]),
        ResultCode::Base(DIAMETER_COMMAND_UNSUPPORTED)
    );
    // 3xxx are protocol errors: E bit set.
    assert!(out.iter().all(|m| m.flags & FLAG_ERROR != 0));
    assert_eq!((out[0].hop_by_hop, out[1].hop_by_hop), (1, 2));
    assert!(events(&mut p).is_empty());
    assert_eq!(p.state(), ServerState::Open);
}

#[test]
fn split_and_coalesced_reads() {
    let t0 = Instant::now();
    let stream = [
        cer().encode(),
        with_ids(base::dwr(&mme_id()), 2, 2).encode(),
        with_ids(air().to_message(), 3, 3).encode(),
    ]
    .concat();
    let run = |chunk: usize| {
        let mut p = server(t0);
        for piece in stream.chunks(chunk) {
            p.handle_input(piece, t0);
        }
        let out: Vec<(u32, u32)> = sent(&mut p)
            .iter()
            .map(|m| (m.command_code, m.hop_by_hop))
            .collect();
        let requests = events(&mut p)
            .into_iter()
            .filter(|e| matches!(e, ServerEvent::Request(_)))
            .count();
        (out, requests)
    };
    let want = (
        vec![
            (CMD_CAPABILITIES_EXCHANGE, 0x1111),
            (CMD_DEVICE_WATCHDOG, 2),
        ],
        1,
    );
    for chunk in [1, 3, 19, 20, 21, 100, stream.len()] {
        assert_eq!(run(chunk), want, "chunk size {chunk}");
    }
}

#[test]
fn oversized_or_malformed_header_is_refused() {
    let t0 = Instant::now();
    let oversized = [1u8, 0x10, 0, 0, 0x80, 0, 1, 24];
    let too_short = [1u8, 0, 0, 12];
    let version_2 = [2u8, 0, 0, 20];
    for (bad, why) in [
        (&oversized[..], "length"),
        (&too_short[..], "length"),
        (&version_2[..], "version"),
    ] {
        for mut p in [server(t0), open(t0)] {
            p.handle_input(bad, t0);
            assert_eq!(p.state(), ServerState::Closed);
            assert!(sent(&mut p).is_empty());
            assert!(
                matches!(events(&mut p).as_slice(), [ServerEvent::Closed(r)] if r.contains(why)),
                "{bad:?}"
            );
        }
    }
}

#[test]
fn cer_timeout_closes() {
    let t0 = Instant::now();
    let mut p = server(t0);
    let deadline = t0 + Duration::from_secs(10);
    assert_eq!(p.poll_timeout(), Some(deadline));
    p.handle_timeout(deadline - Duration::from_millis(1));
    assert_eq!(p.state(), ServerState::WaitCer);
    p.handle_timeout(deadline);
    assert_eq!(p.state(), ServerState::Closed);
    assert!(matches!(events(&mut p).as_slice(), [ServerEvent::Closed(r)] if r.contains("no CER")));
}

#[test]
fn watchdog_toward_a_silent_client() {
    let t0 = Instant::now();
    let mut p = open(t0);
    let tw = Duration::from_secs(30);
    assert_eq!(p.poll_timeout(), Some(t0 + tw));
    p.handle_timeout(t0 + tw);
    let out = sent(&mut p);
    assert_eq!(
        (out[0].command_code, out[0].is_request()),
        (CMD_DEVICE_WATCHDOG, true)
    );
    // The client's DWA is the watchdog's business, not the application's.
    p.handle_input(&base::dwa(&out[0], &mme_id()).encode(), t0 + tw);
    assert!(events(&mut p).is_empty());
    assert_eq!(p.poll_timeout(), Some(t0 + tw + tw));
    // Any request also proves the client alive.
    let t1 = t0 + Duration::from_secs(45);
    p.handle_input(&with_ids(air().to_message(), 5, 5).encode(), t1);
    assert_eq!(p.poll_timeout(), Some(t1 + tw));
    events(&mut p);
    // A DWR unanswered for Tw closes the connection.
    p.handle_timeout(t1 + tw);
    assert_eq!(sent(&mut p)[0].command_code, CMD_DEVICE_WATCHDOG);
    p.handle_timeout(t1 + tw + tw);
    assert_eq!(p.state(), ServerState::Closed);
    assert!(
        matches!(events(&mut p).as_slice(), [ServerEvent::Closed(r)] if r.contains("watchdog"))
    );
}

#[test]
fn server_requests_are_matched_timed_out_and_failed_on_close() {
    use crate::s6a::{CancelLocationAnswer, CancelLocationRequest};
    use crate::tests::clr;
    let t0 = Instant::now();
    let mut p = server(t0);
    assert_eq!(
        p.request(clr().to_message(), t0),
        Err(NotOpen(ServerState::WaitCer))
    );
    let mut p = open(t0);
    let h1 = p.request(clr().to_message(), t0).unwrap();
    let h2 = p.request(clr().to_message(), t0).unwrap();
    assert_ne!(h1, h2);
    let out = sent(&mut p);
    assert_eq!(out.len(), 2);
    assert!(out[0].is_request() && out[0].command_code == CMD_CANCEL_LOCATION);
    assert_eq!(
        CancelLocationRequest::from_message(&out[0]).unwrap(),
        clr(),
        "sent as built, with ids of our own"
    );
    // The request deadline is the next timeout, before the watchdog's.
    assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    let cla = CancelLocationAnswer {
        session_id: clr().session_id,
        origin_host: "mme.corehop.lab".into(),
        origin_realm: "corehop.lab".into(),
        result: ResultCode::SUCCESS,
    }
    .to_message(&out[0]);
    p.handle_input(&cla.encode(), t0);
    assert!(matches!(
        events(&mut p).as_slice(),
        [ServerEvent::Answer { hop_by_hop, message }] if *hop_by_hop == h1 && message == &cla
    ));
    // The same answer again matches nothing and is dropped.
    p.handle_input(&cla.encode(), t0);
    assert!(events(&mut p).is_empty());
    // The second never gets an answer.
    p.handle_timeout(t0 + Duration::from_secs(5));
    assert!(matches!(
        events(&mut p).as_slice(),
        [ServerEvent::RequestFailed { hop_by_hop, command_code: CMD_CANCEL_LOCATION, .. }] if *hop_by_hop == h2
    ));
    // A request outstanding when the client leaves fails before the close is reported.
    let h3 = p.request(clr().to_message(), t0).unwrap();
    p.handle_input(
        &with_ids(base::dpr(&mme_id(), DISCONNECT_CAUSE_REBOOTING), 9, 9).encode(),
        t0,
    );
    assert!(matches!(
        events(&mut p).as_slice(),
        [ServerEvent::RequestFailed { hop_by_hop, .. }, ServerEvent::Closed(_)] if *hop_by_hop == h3
    ));
}
