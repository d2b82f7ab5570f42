//! Reading a file inside a running guest through QEMU's guest agent (qemu-ga, from
//! Debian's qemu-guest-agent, which setup-vm.sh fetches and every image carries). The
//! guest runs it on its second serial port (ttyS1); QEMU exposes that port as a unix
//! socket in the VM's run dir. A serial port migrates with the VM, so the agent keeps
//! answering at the destination. Protocol: QGA's JSON commands, one a line
//! (`guest-sync-delimited`, `guest-file-open`, `guest-file-read`, `guest-file-close`).
use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The guest agent's socket in a VM's run dir.
pub fn socket(run_dir: &Path) -> PathBuf {
    run_dir.join("qga.sock")
}

/// Largest file [`read_file`] returns: what it is for (tunnel lists, small state files)
/// is far smaller, and a bigger one would sit in memory twice.
pub const MAX_FILE: usize = 16 << 20;

/// The bytes of `path` inside the guest whose agent listens on `sock`.
pub fn read_file(sock: &Path, path: &str, timeout: Duration) -> Result<Vec<u8>> {
    let mut ga = Agent::connect(sock, timeout)?;
    let handle = ga
        .call("guest-file-open", json!({ "path": path, "mode": "r" }))
        .with_context(|| format!("guest file {path}"))?;
    let handle = handle
        .as_i64()
        .with_context(|| format!("guest-file-open returned {handle}, not a handle"))?;
    let read = (|| {
        let mut data = Vec::new();
        loop {
            let r = ga.call(
                "guest-file-read",
                json!({ "handle": handle, "count": 1 << 16 }),
            )?;
            let b64 = r["buf-b64"].as_str().unwrap_or("");
            let chunk = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .context("guest-file-read returned bad base64")?;
            data.extend_from_slice(&chunk);
            if data.len() > MAX_FILE {
                bail!("guest file {path} is over {MAX_FILE} bytes");
            }
            if r["eof"].as_bool().unwrap_or(true) || chunk.is_empty() {
                return Ok(data);
            }
        }
    })();
    let _ = ga.call("guest-file-close", json!({ "handle": handle }));
    read
}

struct Agent {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Agent {
    /// Connects and syncs: QGA has no greeting, and a serial line may hold the rest of an
    /// earlier client's exchange, so a random id is echoed back after a 0xFF marker that
    /// tells where the fresh stream starts.
    fn connect(sock: &Path, timeout: Duration) -> Result<Agent> {
        let s = UnixStream::connect(sock).with_context(|| {
            format!(
                "cannot connect to the guest agent at {} (is the VM running?)",
                sock.display()
            )
        })?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        let mut ga = Agent {
            r: BufReader::new(s.try_clone()?),
            w: s,
        };
        let id = u64::from(std::process::id()) << 20 | u64::from(rand_u16());
        // 0xFF resets the agent's JSON parser, should a partial command be pending.
        ga.w.write_all(&[0xff])?;
        ga.send("guest-sync-delimited", json!({ "id": id }))?;
        let mut junk = Vec::new();
        ga.r.read_until(0xff, &mut junk)
            .context("the guest agent did not answer (still booting?)")?;
        loop {
            let v = ga.line()?;
            if v["return"].as_u64() == Some(id) {
                return Ok(ga);
            }
        }
    }

    fn send(&mut self, cmd: &str, args: Value) -> Result<()> {
        let mut line = serde_json::to_vec(&json!({ "execute": cmd, "arguments": args }))?;
        line.push(b'\n');
        self.w.write_all(&line)?;
        Ok(())
    }

    fn line(&mut self) -> Result<Value> {
        let mut buf = Vec::new();
        let n = self
            .r
            .read_until(b'\n', &mut buf)
            .context("no answer from the guest agent")?;
        if n == 0 {
            bail!("the guest agent closed its channel");
        }
        // A sync marker left over on the line is no part of the JSON.
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim_matches(|c: char| c == '\u{fffd}' || c.is_whitespace());
        serde_json::from_str(text).with_context(|| format!("guest agent sent {text:?}"))
    }

    fn call(&mut self, cmd: &str, args: Value) -> Result<Value> {
        self.send(cmd, args)?;
        let v = self.line()?;
        if let Some(e) = v.get("error") {
            bail!("{cmd}: {}", e["desc"].as_str().unwrap_or(&e.to_string()));
        }
        Ok(v.get("return").cloned().unwrap_or(Value::Null))
    }
}

/// A little entropy for the sync id (no crate needed for 16 bits).
fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ (t.subsec_nanos() >> 16)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Answers as qemu-ga does: the sync reply after a 0xFF, then one reply a command.
    fn agent(dir: &Path, replies: Vec<&'static str>) -> PathBuf {
        let sock = dir.join("qga.sock");
        let l = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut line = Vec::new();
            r.read_until(b'\n', &mut line).unwrap();
            let sync: Value = serde_json::from_slice(line.strip_prefix(&[0xff]).unwrap()).unwrap();
            // A stale line from an earlier client comes first, as on a serial port.
            writeln!(w, "{{\"return\": 1}}").unwrap();
            w.write_all(&[0xff]).unwrap();
            writeln!(w, "{{\"return\": {}}}", sync["arguments"]["id"]).unwrap();
            for reply in replies {
                line.clear();
                if r.read_until(b'\n', &mut line).unwrap() == 0 {
                    return;
                }
                writeln!(w, "{reply}").unwrap();
            }
        });
        sock
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ga-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_file_is_read_in_chunks_until_eof() {
        let d = tmp("read");
        let sock = agent(
            &d,
            vec![
                r#"{"return": 1000}"#,
                r#"{"return": {"count": 3, "buf-b64": "WzFd", "eof": false}}"#,
                r#"{"return": {"count": 2, "buf-b64": "Cg==", "eof": true}}"#,
                r#"{"return": {}}"#,
            ],
        );
        let got = read_file(&sock, "/run/x.json", Duration::from_secs(5)).unwrap();
        assert_eq!(got, b"[1]\n");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn errors_and_junk_are_errors_not_panics() {
        let d = tmp("err");
        let sock = agent(
            &d,
            vec![r#"{"error": {"class": "GenericError", "desc": "No such file"}}"#],
        );
        let e = read_file(&sock, "/nope", Duration::from_secs(5)).unwrap_err();
        assert!(format!("{e:#}").contains("No such file"), "{e:#}");
        let d2 = tmp("junk");
        let sock = agent(&d2, vec![r#"{"return": "not a handle"}"#]);
        assert!(read_file(&sock, "/x", Duration::from_secs(5)).is_err());
        let d3 = tmp("b64");
        let sock = agent(
            &d3,
            vec![
                r#"{"return": 7}"#,
                r#"{"return": {"buf-b64": "!!", "eof": true}}"#,
                r#"{"return": {}}"#,
            ],
        );
        assert!(read_file(&sock, "/x", Duration::from_secs(5)).is_err());
        assert!(read_file(&d.join("none.sock"), "/x", Duration::from_secs(1)).is_err());
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(&d2);
        let _ = std::fs::remove_dir_all(&d3);
    }
}
