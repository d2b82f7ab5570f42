//! The agent protocol: `wire::read_frame` (4-byte length + JSON) into `api::Request`,
//! and the server side of the handshake (`wire::accept`) against a scripted peer.
//!
//! The first input byte selects the mode:
//! - even: the rest is a byte stream of frames read as `Request`s until an error;
//!   every request that deserializes must serialize and deserialize to the same JSON;
//! - odd: the rest is what a client sends during `accept` (its proof frame), with the
//!   lab token fixed: a forged proof must be refused, never accepted or panicking.
#![no_main]
use agent::api::Request;
use agent::wire;
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};

/// A stream that reads from the fuzz input and swallows what is written.
struct Scripted<'a> {
    input: &'a [u8],
    written: usize,
}

impl Read for Scripted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Scripted<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        for _ in 0..16 {
            match wire::read_frame::<Request>(&mut rest) {
                Ok(req) => {
                    let json = serde_json::to_value(&req).expect("Request serializes");
                    let back: Request = serde_json::from_value(json.clone())
                        .unwrap_or_else(|e| panic!("{json} does not deserialize back: {e}"));
                    assert_eq!(serde_json::to_value(&back).unwrap(), json);
                    // Writing it as a frame and reading it again gives the same request.
                    let mut framed = Vec::new();
                    wire::write_frame(&mut framed, &req).expect("frame fits");
                    let again: Request = wire::read_frame(&mut &framed[..]).expect("reframed");
                    assert_eq!(serde_json::to_value(&again).unwrap(), json);
                }
                Err(_) => break,
            }
        }
    } else {
        let mut s = Scripted {
            input: rest,
            written: 0,
        };
        let r = wire::accept(&mut s, b"0123456789abcdef0123456789abcdef");
        // The proof covers a fresh random nonce: no fixed input can pass.
        assert!(r.is_err(), "a scripted client passed authentication");
    }
});
