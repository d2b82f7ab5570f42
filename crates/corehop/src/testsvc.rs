//! `corehop testsvc`: a small stateful service to prove migrations. One counter shared by
//! TCP (a line `inc` answers the incremented value, `get` the current one) and UDP (a
//! datagram `inc` or `get`, same answers). Its state lives only in process memory.
use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn answer(counter: &AtomicU64, req: &str) -> Option<String> {
    match req.trim() {
        "inc" => Some(format!("{}\n", counter.fetch_add(1, Ordering::SeqCst) + 1)),
        "get" => Some(format!("{}\n", counter.load(Ordering::SeqCst))),
        _ => None,
    }
}

pub fn serve(tcp: SocketAddr, udp: SocketAddr) -> Result<()> {
    let counter = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind(tcp).with_context(|| format!("cannot listen on {tcp}"))?;
    let sock = UdpSocket::bind(udp).with_context(|| format!("cannot bind {udp}"))?;
    let c = counter.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        loop {
            // A restored UDP socket may report EINTR once; just retry.
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            if let Some(a) = answer(&c, &String::from_utf8_lossy(&buf[..n])) {
                let _ = sock.send_to(a.trim_end().as_bytes(), peer);
            }
        }
    });
    tracing::info!("testsvc counting on tcp {tcp} and udp {udp}");
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let c = counter.clone();
        std::thread::spawn(move || client(conn, &c));
    }
    Ok(())
}

fn client(conn: TcpStream, counter: &AtomicU64) {
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            // Interrupted reads happen around a restore; the connection itself is fine.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
        let reply = answer(counter, &line).unwrap_or_else(|| "error: send inc or get\n".into());
        if w.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
