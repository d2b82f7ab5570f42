//! runc starts functions (`runc run`, one root per host); CRIU's command-line helpers. A
//! function's stdio goes through a pipe into a log file: CRIU can carry a pipe across a
//! checkpoint (a restore re-binds it), but not a host file outside the container's mounts.
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone)]
pub struct Runc {
    pub root: PathBuf,
}

impl Runc {
    fn cmd(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root").arg(&self.root);
        c
    }

    /// Starts the container detached; its output is appended to `log`.
    pub fn run(&self, id: &str, bundle: &Path, log: &Path) -> Result<()> {
        let mut c = self.cmd();
        c.args(["run", "-d", "--bundle"]).arg(bundle).arg(id);
        self.spawn_logged(c, log, "run")
    }

    fn spawn_logged(&self, mut c: Command, log: &Path, what: &str) -> Result<()> {
        let (writer, first) = log_pipe(log)?;
        let mut child = c
            .stdin(empty_stdin()?)
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()
            .with_context(|| format!("cannot start runc {what}"))?;
        let status = child.wait()?;
        drop(c);
        if !status.success() {
            let out = first
                .recv_timeout(std::time::Duration::from_millis(500))
                .unwrap_or_default();
            bail!(
                "runc {what} failed: {}",
                String::from_utf8_lossy(&out).trim()
            );
        }
        Ok(())
    }
}

/// A pipe's read end at EOF, as a function's stdin: the host's /dev/null would be a file
/// on a mount the container does not have, which CRIU cannot dump; a pipe it carries
/// (a restore hands the restored tasks a new one).
pub fn empty_stdin() -> Result<std::io::PipeReader> {
    let (r, _w) = std::io::pipe()?;
    Ok(r)
}

/// A pipe whose read end a thread copies into `log` (appended) until every write end is
/// closed (runc's own messages and then the function's output share it); the receiver gets
/// the first 4 KiB, for error messages.
pub fn log_pipe(log: &Path) -> Result<(std::io::PipeWriter, std::sync::mpsc::Receiver<Vec<u8>>)> {
    let (mut reader, writer) = std::io::pipe()?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut first = Vec::new();
        let mut sent = false;
        loop {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let _ = std::io::Write::write_all(&mut file, &buf[..n]);
                    if !sent {
                        first.extend_from_slice(&buf[..n]);
                    }
                }
            }
            if !sent && first.len() > 4096 {
                sent = tx.send(std::mem::take(&mut first)).is_ok();
            }
        }
        if !sent {
            let _ = tx.send(first);
        }
    });
    Ok((writer, rx))
}

/// Adds CRIU's own error lines to a failed checkpoint or restore.
pub fn criu_error(e: anyhow::Error, work: &Path, log: &str) -> anyhow::Error {
    let text = std::fs::read_to_string(work.join(log)).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .take(4)
        .collect();
    if errors.is_empty() {
        e
    } else {
        e.context(format!("CRIU says: {}", errors.join(" | ")))
    }
}

/// `criu check`: whether CRIU works on this kernel, and its version.
pub fn criu_check(criu: &Path) -> Result<String> {
    let v = Command::new(criu)
        .arg("--version")
        .output()
        .with_context(|| format!("no criu at {}", criu.display()))?;
    let version = String::from_utf8_lossy(&v.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Version: ").map(str::to_string))
        .with_context(|| format!("{} does not report a CRIU version", criu.display()))?;
    let c = Command::new(criu).arg("check").output()?;
    let text = String::from_utf8_lossy(&c.stdout).to_string() + &String::from_utf8_lossy(&c.stderr);
    if !c.status.success() || !text.contains("Looks good") {
        bail!("`criu check` fails: {}", text.trim());
    }
    Ok(version)
}

/// Whether CRIU can track dirty memory here (real pre-dump), per `criu check --feature`.
pub fn criu_has_dirty_tracking(criu: &Path) -> bool {
    Command::new(criu)
        .args(["check", "--feature", "mem_dirty_track"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// PostCopy's destination half: `criu lazy-pages`, which pulls the memory of a lazily
/// restored process from the source's page server at `from` as it faults and then in the
/// background, and exits once every page is in. Returns when its socket (in `work`, where
/// `runc restore --lazy-pages --work-path work` looks for it) is up.
pub fn lazy_pages_daemon(
    criu: &Path,
    from: std::net::SocketAddr,
    images: &Path,
    work: &Path,
) -> Result<std::process::Child> {
    let mut child = Command::new(criu)
        .args(["lazy-pages", "--page-server", "--address"])
        .arg(from.ip().to_string())
        .arg("--port")
        .arg(from.port().to_string())
        .arg("--images-dir")
        .arg(images)
        .arg("--work-dir")
        .arg(work)
        .args(["-o", "lazy-pages.log", "-v4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {} lazy-pages", criu.display()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !work.join("lazy-pages.socket").exists() {
        if let Some(st) = child.try_wait()? {
            let e = anyhow::anyhow!("criu lazy-pages exited at once ({st})");
            return Err(criu_error(e, work, "lazy-pages.log"));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let e = anyhow::anyhow!("criu lazy-pages did not open its socket within 5 s");
            return Err(criu_error(e, work, "lazy-pages.log"));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Ok(child)
}
