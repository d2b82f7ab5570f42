//! NAS (EPS) decoding: `msg::parse` on plain messages, `security::open` without and
//! with a fixed security context, and protect→open round trips.
//!
//! The first input byte selects the mode and direction; the rest is the PDU:
//! - mode 0: `msg::parse` + oxirush's decode(encode(m)) == m;
//! - mode 1: `security::open` without a context;
//! - mode 2: `security::open` with a fixed context (EEA2/EIA2), whose MAC check fails for
//!   almost any input, which is exactly the path a hostile UE exercises;
//! - mode 3: the PDU is taken as a plain message, protected with one context and opened
//!   with a twin one: if it parses plain, it must open to the same octets and view.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proto_nas::eps::NasEpsMessage;
use proto_nas::{msg, security, Direction, NasSecurity, SecurityHeader};

const KASME: [u8; 32] = [0x5a; 32];

fn ctx(eea: u8, eia: u8) -> NasSecurity {
    NasSecurity::new(KASME, 1, eea, eia).expect("fixed context")
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, pdu)) = data.split_first() else {
        return;
    };
    let dir = if sel & 0x80 != 0 {
        Direction::Uplink
    } else {
        Direction::Downlink
    };
    match sel & 0x03 {
        0 => {
            let _ = msg::parse(pdu, dir);
            let _ = security::SecurityHeader::of(pdu);
            if let Ok(m) = NasEpsMessage::decode_with_direction(pdu, dir) {
                let _ = msg::from_message(&m);
                if let Ok(bytes) = m.encode() {
                    let again = NasEpsMessage::decode_with_direction(&bytes, dir)
                        .unwrap_or_else(|e| panic!("re-encoded {m:?} does not decode: {e}"));
                    assert_eq!(again, m, "decode(encode(m)) != m");
                }
            }
        }
        1 => {
            let _ = security::open(pdu, None, dir);
        }
        2 => {
            let mut sec = ctx(2, 2);
            let _ = security::open(pdu, Some(&mut sec), dir);
        }
        _ => {
            // Algorithms from the selector: EEA0..3 x EIA1..3.
            let eea = (sel >> 2) & 0x03;
            let eia = 1 + ((sel >> 4) & 0x03) % 3;
            let sht = if sel & 0x40 != 0 {
                SecurityHeader::IntegrityCiphered
            } else {
                SecurityHeader::Integrity
            };
            if SecurityHeader::of(pdu).ok() != Some(SecurityHeader::Plain) {
                return;
            }
            let Ok(nas) = msg::parse(pdu, dir) else {
                return;
            };
            let mut tx = ctx(eea, eia);
            let Ok(protected) = tx.protect(pdu, sht, dir) else {
                return;
            };
            let mut rx = ctx(eea, eia);
            let opened = security::open(&protected, Some(&mut rx), dir)
                .unwrap_or_else(|e| panic!("own protected PDU does not open: {e}"));
            assert_eq!(opened.plain, pdu);
            assert_eq!(opened.nas, nas);
            assert!(opened.verified);
            assert_eq!(opened.header, sht);
        }
    }
});
