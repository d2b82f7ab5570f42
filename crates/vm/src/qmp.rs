//! A small QMP (QEMU Machine Protocol) client: JSON objects, one per line, over a unix
//! socket.
//!
//! Hand-written rather than the `qapi` crates: those are generated from one QEMU's schema
//! (8.x and later today) and deserialize whole answers into structs with that version's
//! required fields and enums, so a field or status that QEMU 7.2 (Debian 12) names
//! differently turns into a hard error. The dozen commands we need fit in a few lines of
//! serde_json, and we read only the fields we use, each one optional, so any answer QEMU
//! gives is handled as data and never panics.
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest answer line accepted. The largest we ask for (query-cpu-definitions) is about
/// 40 KB; the cap only bounds memory if the peer misbehaves.
const MAX_LINE: u64 = 8 << 20;
/// Events kept for [`Qmp::take_events`]; older ones are dropped.
const MAX_EVENTS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP I/O on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("QMP on {path}: no answer to `{command}` within {timeout:?}")]
    Timeout {
        path: String,
        command: String,
        timeout: Duration,
    },
    #[error("QMP on {path}: QEMU closed the connection (it has exited; see its log)")]
    Closed { path: String },
    #[error("QMP on {path}: unexpected data from QEMU: {detail}")]
    Protocol { path: String, detail: String },
    /// QEMU refused a command; `class` is QMP's error class (e.g. GenericError).
    #[error("QEMU refused `{command}`: {desc} ({class})")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

pub type Result<T, E = QmpError> = std::result::Result<T, E>;

/// QEMU's version from the QMP greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
}

impl std::fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.micro)
    }
}

/// `query-status`: `status` is QEMU's RunState (running, paused, inmigrate, postmigrate,
/// finish-migrate, shutdown, ...).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct StatusInfo {
    pub running: bool,
    pub status: String,
}

/// RAM part of `query-migrate` (QAPI MigrationStats). Every field is optional: QEMU only
/// reports them once RAM migration has started.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
pub struct RamStats {
    pub transferred: Option<i64>,
    pub remaining: Option<i64>,
    pub total: Option<i64>,
    pub duplicate: Option<i64>,
    pub normal: Option<i64>,
    pub normal_bytes: Option<i64>,
    pub dirty_pages_rate: Option<i64>,
    pub mbps: Option<f64>,
    pub dirty_sync_count: Option<i64>,
    pub page_size: Option<i64>,
}

/// `query-migrate` (QAPI MigrationInfo), the fields the migration loop uses. Times in ms.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
pub struct MigrateInfo {
    /// none, setup, active, pre-switchover, device, completed, failed, cancelling,
    /// cancelled, postcopy-*, ... (absent before any migration).
    pub status: Option<String>,
    pub total_time: Option<i64>,
    pub expected_downtime: Option<i64>,
    pub downtime: Option<i64>,
    pub setup_time: Option<i64>,
    pub ram: Option<RamStats>,
    pub error_desc: Option<String>,
}

/// Migration parameters we set (`migrate-set-parameters`); `None` leaves QEMU's value.
#[derive(Debug, Clone, Default)]
pub struct MigrationParameters {
    /// Bytes per second the live copy may use; QEMU's default is 128 MiB/s.
    pub max_bandwidth: Option<u64>,
    /// Longest stop-and-copy QEMU aims for, in ms (QEMU's default: 300).
    pub downtime_limit_ms: Option<u64>,
}

/// One entry of `query-cpu-definitions`.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq, Eq)]
#[serde(default, rename_all = "kebab-case")]
pub struct CpuDefinition {
    pub name: String,
    /// Features this QEMU/accelerator cannot give the model on this host; non-empty means
    /// the model cannot run here. Absent when QEMU does not know.
    pub unavailable_features: Option<Vec<String>>,
    pub migration_safe: Option<bool>,
    #[serde(rename = "static")]
    pub is_static: bool,
}

/// A CPU model expanded by `query-cpu-model-expansion`: its features, on or off.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuModel {
    pub name: String,
    pub props: BTreeMap<String, bool>,
}

/// A connected QMP session in command mode.
pub struct Qmp {
    path: String,
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    /// Bytes of a line not yet complete when a read timed out; kept so the next read
    /// continues the line instead of parsing half of it.
    partial: Vec<u8>,
    next_id: u64,
    version: QemuVersion,
    events: Vec<Value>,
    timeout: Duration,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("path", &self.path)
            .field("version", &self.version)
            .finish()
    }
}

impl Qmp {
    /// Connects to the QMP socket at `path`, retrying until `within` passes (QEMU creates
    /// the socket a moment after it starts), and negotiates command mode.
    pub fn connect(path: &Path, within: Duration) -> Result<Qmp> {
        let name = path.display().to_string();
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < within => {
                    tracing::trace!("QMP {name} not ready: {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(QmpError::Io {
                        path: name,
                        source: e,
                    })
                }
            }
        };
        let io = |e| QmpError::Io {
            path: name.clone(),
            source: e,
        };
        let reader = BufReader::new(stream.try_clone().map_err(io)?);
        let mut qmp = Qmp {
            path: name.clone(),
            stream,
            reader,
            partial: Vec::new(),
            next_id: 1,
            version: QemuVersion::default(),
            events: Vec::new(),
            timeout: Duration::from_secs(10),
        };
        // QEMU serves one QMP client at a time; a client taken right after another's goodbye
        // was seen to get an event left over from that session before its own greeting
        // (a RESUME, during a VM PreCopy run of the benchmark): such events are skipped.
        let greeting = loop {
            let m = qmp.read_message("greeting", Duration::from_secs(10))?;
            if m.get("event").is_none() || start.elapsed() > within + Duration::from_secs(10) {
                break m;
            }
            tracing::debug!("QMP {name}: skipping {m} before the greeting");
        };
        let v = greeting
            .get("QMP")
            .and_then(|q| q.get("version"))
            .and_then(|v| v.get("qemu"))
            .ok_or_else(|| qmp.protocol(format!("no QMP greeting but {greeting}")))?;
        let num = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0)
        };
        qmp.version = QemuVersion {
            major: num("major"),
            minor: num("minor"),
            micro: num("micro"),
        };
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    pub fn version(&self) -> QemuVersion {
        self.version
    }

    /// How long a command may take to answer (default 10 s).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// Asynchronous events QEMU sent since the last call (oldest first).
    pub fn take_events(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.events)
    }

    /// Runs one command and returns its `return` value. Events arriving meanwhile are
    /// queued; answers to earlier commands that timed out are skipped by id.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let (Some(args), Some(obj)) = (arguments, msg.as_object_mut()) {
            obj.insert("arguments".into(), args);
        }
        let mut line = msg.to_string();
        line.push('\n');
        tracing::trace!("QMP {} -> {}", self.path, line.trim_end());
        self.stream
            .write_all(line.as_bytes())
            .map_err(|e| self.io(e))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(QmpError::Timeout {
                    path: self.path.clone(),
                    command: command.into(),
                    timeout: self.timeout,
                });
            }
            let m = self.read_message(command, left)?;
            if m.get("event").is_some() {
                if self.events.len() >= MAX_EVENTS {
                    self.events.remove(0);
                }
                self.events.push(m);
                continue;
            }
            if m.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
                return Err(QmpError::Command {
                    command: command.into(),
                    class: s("class"),
                    desc: s("desc"),
                });
            }
            return Err(self.protocol(format!("answer without return or error: {m}")));
        }
    }

    /// Runs a command and decodes its answer into `T`.
    fn query<T: serde::de::DeserializeOwned>(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<T> {
        let v = self.execute(command, arguments)?;
        serde_json::from_value(v).map_err(|e| self.protocol(format!("`{command}` answer: {e}")))
    }

    pub fn query_status(&mut self) -> Result<StatusInfo> {
        self.query("query-status", None)
    }

    pub fn query_migrate(&mut self) -> Result<MigrateInfo> {
        self.query("query-migrate", None)
    }

    pub fn migrate_set_parameters(&mut self, p: &MigrationParameters) -> Result<()> {
        let mut args = serde_json::Map::new();
        if let Some(b) = p.max_bandwidth {
            args.insert("max-bandwidth".into(), b.into());
        }
        if let Some(d) = p.downtime_limit_ms {
            args.insert("downtime-limit".into(), d.into());
        }
        if args.is_empty() {
            return Ok(());
        }
        self.execute("migrate-set-parameters", Some(Value::Object(args)))
            .map(|_| ())
    }

    /// Turns migration capabilities (e.g. `xbzrle`, `events`) on or off.
    pub fn migrate_set_capabilities(&mut self, caps: &[(&str, bool)]) -> Result<()> {
        if caps.is_empty() {
            return Ok(());
        }
        let list: Vec<Value> = caps
            .iter()
            .map(|(c, on)| json!({ "capability": c, "state": on }))
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )
        .map(|_| ())
    }

    /// Starts an outgoing migration to `uri` (e.g. `tcp:10.0.0.2:4444`); it runs in the
    /// background, follow it with [`Qmp::query_migrate`].
    pub fn migrate(&mut self, uri: &str) -> Result<()> {
        self.execute("migrate", Some(json!({ "uri": uri })))
            .map(|_| ())
    }

    /// Makes a QEMU started with `-incoming defer` listen on `uri`.
    pub fn migrate_incoming(&mut self, uri: &str) -> Result<()> {
        self.execute("migrate-incoming", Some(json!({ "uri": uri })))
            .map(|_| ())
    }

    pub fn migrate_cancel(&mut self) -> Result<()> {
        self.execute("migrate_cancel", None).map(|_| ())
    }

    /// Makes a QOM object (`qom-type`, `id` and its properties in `props`).
    pub fn object_add(&mut self, props: Value) -> Result<()> {
        self.execute("object-add", Some(props)).map(|_| ())
    }

    pub fn object_del(&mut self, id: &str) -> Result<()> {
        self.execute("object-del", Some(json!({ "id": id })))
            .map(|_| ())
    }

    /// Resumes a stopped guest.
    pub fn cont(&mut self) -> Result<()> {
        self.execute("cont", None).map(|_| ())
    }

    pub fn query_cpu_definitions(&mut self) -> Result<Vec<CpuDefinition>> {
        self.query("query-cpu-definitions", None)
    }

    /// Expands `model` (`kind` is "static" or "full") into its feature flags.
    pub fn query_cpu_model_expansion(&mut self, kind: &str, model: &str) -> Result<CpuModel> {
        let v = self.execute(
            "query-cpu-model-expansion",
            Some(json!({ "type": kind, "model": { "name": model } })),
        )?;
        let m = v
            .get("model")
            .ok_or_else(|| self.protocol(format!("expansion of {model} without a model: {v}")))?;
        let name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(model)
            .to_string();
        // Props also hold non-boolean values (family, model-id, ...): only flags matter.
        let props = m
            .get("props")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| v.as_bool().map(|b| (k.clone(), b)))
                    .collect()
            })
            .unwrap_or_default();
        Ok(CpuModel { name, props })
    }

    /// Asks QEMU to exit. The connection closing before the answer also counts as done.
    pub fn quit(&mut self) -> Result<()> {
        match self.execute("quit", None) {
            Ok(_) | Err(QmpError::Closed { .. }) => Ok(()),
            Err(QmpError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionReset
                    || source.kind() == std::io::ErrorKind::BrokenPipe =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Reads one complete JSON line within `within`.
    fn read_message(&mut self, what: &str, within: Duration) -> Result<Value> {
        // A zero timeout would mean "block forever" to the socket.
        let t = within.max(Duration::from_millis(1));
        self.reader
            .get_ref()
            .set_read_timeout(Some(t))
            .map_err(|e| self.io(e))?;
        loop {
            let room = MAX_LINE.saturating_sub(self.partial.len() as u64);
            let n = match (&mut self.reader)
                .take(room)
                .read_until(b'\n', &mut self.partial)
            {
                Ok(n) => n,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Err(QmpError::Timeout {
                        path: self.path.clone(),
                        command: what.into(),
                        timeout: within,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.io(e)),
            };
            if self.partial.last() != Some(&b'\n') {
                if n == 0 {
                    return Err(QmpError::Closed {
                        path: self.path.clone(),
                    });
                }
                if self.partial.len() as u64 >= MAX_LINE {
                    self.partial.clear();
                    return Err(self.protocol(format!("a line longer than {MAX_LINE} bytes")));
                }
                continue;
            }
            let line = std::mem::take(&mut self.partial);
            let text = String::from_utf8_lossy(&line);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            tracing::trace!("QMP {} <- {}", self.path, text);
            return serde_json::from_str(text)
                .map_err(|e| self.protocol(format!("not JSON ({e}): {text}")));
        }
    }

    fn io(&self, e: std::io::Error) -> QmpError {
        QmpError::Io {
            path: self.path.clone(),
            source: e,
        }
    }

    fn protocol(&self, detail: String) -> QmpError {
        QmpError::Protocol {
            path: self.path.clone(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A fake QEMU that answers from a script, so the client's handling of events,
    /// stale ids, errors and junk is tested without QEMU.
    fn fake(dir: &Path, script: fn(&mut BufReader<UnixStream>, &mut UnixStream)) -> Qmp {
        let sock = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&sock);
        let l = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            s.write_all(
                b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n",
            )
            .unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"));
            s.write_all(b"{\"return\": {}, \"id\": 1}\r\n").unwrap();
            script(&mut r, &mut s);
        });
        Qmp::connect(&sock, Duration::from_secs(5)).unwrap()
    }

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vm-qmp-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn greeting_events_and_migrate_info() {
        let d = tmp("info");
        let mut q = fake(&d, |r, s| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            // An event, a stale answer, then ours split across two writes.
            s.write_all(b"{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n{\"return\": {}, \"id\": 99}\n{\"return\": {\"status\": \"completed\", \"total-time\": 812, \"downtime\": 15, \"setup-time\": 3,")
                .unwrap();
            std::thread::sleep(Duration::from_millis(50));
            s.write_all(b" \"ram\": {\"transferred\": 1000, \"remaining\": 0, \"total\": 268435456, \"dirty-sync-count\": 3, \"mbps\": 12.5, \"new-field\": 1}}, \"id\": 2}\n")
                .unwrap();
        });
        assert_eq!(
            q.version(),
            QemuVersion {
                major: 7,
                minor: 2,
                micro: 22
            }
        );
        let i = q.query_migrate().unwrap();
        assert_eq!(i.status.as_deref(), Some("completed"));
        assert_eq!(i.total_time, Some(812));
        let ram = i.ram.unwrap();
        assert_eq!(ram.total, Some(268435456));
        assert_eq!(ram.dirty_sync_count, Some(3));
        assert_eq!(q.take_events().len(), 1);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn errors_junk_and_close_are_errors_not_panics() {
        let d = tmp("err");
        let mut q = fake(&d, |r, s| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            s.write_all(
                b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, \"id\": 2}\n",
            )
            .unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            // Well-formed JSON of the wrong shape for query-status.
            s.write_all(b"{\"return\": {\"running\": \"yes\"}, \"id\": 3}\n")
                .unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            s.write_all(b"}{ not json\n").unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
        });
        match q.migrate("tcp:1.2.3.4:5") {
            Err(QmpError::Command { class, desc, .. }) => {
                assert_eq!(class, "GenericError");
                assert_eq!(desc, "no");
            }
            other => panic!("expected a command error, got {other:?}"),
        }
        assert!(matches!(q.query_status(), Err(QmpError::Protocol { .. })));
        assert!(matches!(q.query_status(), Err(QmpError::Protocol { .. })));
        q.set_timeout(Duration::from_secs(2));
        assert!(matches!(q.query_status(), Err(QmpError::Closed { .. })));
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn cpu_expansion_keeps_only_flags() {
        let d = tmp("cpu");
        let mut q = fake(&d, |r, s| {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            s.write_all(b"{\"return\": {\"model\": {\"name\": \"base\", \"props\": {\"sse2\": true, \"vmx\": false, \"family\": 6, \"model-id\": \"x\"}}}, \"id\": 2}\n")
                .unwrap();
        });
        let m = q.query_cpu_model_expansion("static", "qemu64").unwrap();
        assert_eq!(m.name, "base");
        assert_eq!(m.props.len(), 2);
        assert_eq!(m.props.get("sse2"), Some(&true));
        let _ = std::fs::remove_dir_all(d);
    }
}
