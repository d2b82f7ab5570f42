//! runc driven as a command, one root per host. Container stdio goes through a pipe into a
//! log file: CRIU can carry a pipe across a checkpoint (runc re-binds it on restore), but
//! not a host file outside the container's mounts.
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone)]
pub struct Runc {
    pub root: PathBuf,
    /// The criu binary runc should use.
    pub criu: PathBuf,
}

#[derive(Debug, Clone)]
pub struct State {
    /// `running`, `paused` (frozen) or `stopped`.
    pub status: String,
    pub pid: i64,
    /// cgroup directory per v1 controller (`""` is the unified hierarchy).
    pub cgroups: HashMap<String, PathBuf>,
}

/// The part of runc's `state.json` we read (runc 1.1's libcontainer format).
#[derive(Deserialize)]
struct StateFile {
    init_process_pid: i64,
    init_process_start: u64,
    #[serde(default)]
    cgroup_paths: HashMap<String, PathBuf>,
}

fn freezer_file(cgroups: &HashMap<String, PathBuf>) -> Option<PathBuf> {
    cgroups.get("freezer").map(|d| d.join("freezer.state"))
}

fn freezer_state(cgroups: &HashMap<String, PathBuf>) -> Option<String> {
    std::fs::read_to_string(freezer_file(cgroups)?)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Field 22 of /proc/PID/stat: the start time in clock ticks, as runc records it.
fn proc_start_time(pid: i64) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after its end.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn signal_number(name: &str) -> Result<i32> {
    let n = name.trim_start_matches("SIG");
    Ok(match n {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        _ => match n.parse::<i32>() {
            Ok(v) if v > 0 && v < 65 => v,
            _ => bail!("unknown signal {name:?}"),
        },
    })
}

/// CRIU options of one checkpoint.
#[derive(Debug, Clone, Default)]
pub struct CheckpointOpts {
    /// Keep the container running after the dump (PreCopy's first round).
    pub leave_running: bool,
    /// Dump only pages changed since this earlier image dir (`--parent-path`).
    pub parent: Option<PathBuf>,
    /// Use `--pre-dump` (needs kernel dirty-page tracking).
    pub pre_dump: bool,
    /// Leave memory to be served lazily by a page server (PostCopy).
    pub lazy_pages: Option<String>,
}

impl Runc {
    fn cmd(&self) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root")
            .arg(&self.root)
            .arg("--criu")
            .arg(&self.criu);
        c
    }

    fn run_cmd(&self, c: &mut Command, what: &str) -> Result<()> {
        let out = c
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start runc for {what}"))?;
        if !out.status.success() {
            bail!(
                "runc {what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Starts the container detached; its output is appended to `log`.
    pub fn run(&self, id: &str, bundle: &Path, log: &Path) -> Result<()> {
        let mut c = self.cmd();
        c.args(["run", "-d", "--bundle"]).arg(bundle).arg(id);
        self.spawn_logged(c, log, "run")
    }

    /// Restores the container from `images` using `bundle`'s config (netns, cgroups).
    pub fn restore(
        &self,
        id: &str,
        bundle: &Path,
        images: &Path,
        work: &Path,
        log: &Path,
        lazy: bool,
    ) -> Result<()> {
        let mut c = self.cmd();
        c.args([
            "restore",
            "-d",
            "--tcp-established",
            "--file-locks",
            "--bundle",
        ])
        .arg(bundle)
        .arg("--image-path")
        .arg(images)
        .arg("--work-path")
        .arg(work);
        if lazy {
            c.arg("--lazy-pages");
        }
        c.arg(id);
        self.spawn_logged(c, log, "restore")
            .map_err(|e| criu_error(e, work, "restore.log"))
    }

    fn spawn_logged(&self, mut c: Command, log: &Path, what: &str) -> Result<()> {
        let (mut reader, writer) = std::io::pipe()?;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let mut child = c
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .spawn()
            .with_context(|| format!("cannot start runc {what}"))?;
        // runc's own messages and then the container's output share the pipe; the copy ends
        // when the container exits (or is checkpointed and gone).
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
        let status = child.wait()?;
        drop(c);
        if !status.success() {
            let out = rx
                .recv_timeout(std::time::Duration::from_millis(500))
                .unwrap_or_default();
            bail!(
                "runc {what} failed: {}",
                String::from_utf8_lossy(&out).trim()
            );
        }
        Ok(())
    }

    pub fn checkpoint(
        &self,
        id: &str,
        images: &Path,
        work: &Path,
        o: &CheckpointOpts,
    ) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let mut c = self.checkpoint_cmd(id, images, work, o);
        // If the agent dies mid-dump, runc dies with it and CRIU, losing runc, aborts and
        // thaws the function: it is then simply still running at the source. A dump that
        // went on alone would finish later and take the function away behind the
        // controller's back, after it had already been told the outcome was unknown.
        // SAFETY: prctl is async-signal-safe and affects only the child.
        unsafe {
            c.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.run_cmd(&mut c, "checkpoint")
            .map_err(|e| criu_error(e, work, "dump.log"))
    }

    /// PostCopy's dump: returns once CRIU has written the images without memory and its page
    /// server is ready (CRIU writes a NUL to the status fd), leaving runc running until the
    /// destination has pulled every page; the caller reaps it.
    pub fn checkpoint_lazy(
        &self,
        id: &str,
        images: &Path,
        work: &Path,
        o: &CheckpointOpts,
    ) -> Result<std::process::Child> {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        // The status pipe's write end becomes fd 3 of runc (dup2 clears close-on-exec).
        const STATUS_FD: i32 = 3;
        let (mut ready, status) = std::io::pipe()?;
        let mut c = self.checkpoint_cmd(id, images, work, o);
        c.args(["--status-fd", &STATUS_FD.to_string()]);
        let raw = status.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe and touches only the child's fd table.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(raw, STATUS_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start runc for a lazy checkpoint")?;
        drop(status);
        let mut b = [0u8; 1];
        // EOF instead of the NUL means runc (and CRIU) ended before the page server was up.
        if !matches!(ready.read(&mut b), Ok(1)) {
            let out = child.wait_with_output()?;
            let e = anyhow::anyhow!(
                "runc checkpoint --lazy-pages failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return Err(criu_error(e, work, "dump.log"));
        }
        Ok(child)
    }

    fn checkpoint_cmd(&self, id: &str, images: &Path, work: &Path, o: &CheckpointOpts) -> Command {
        let mut c = self.cmd();
        c.arg("checkpoint")
            .args(["--tcp-established", "--file-locks", "--image-path"])
            .arg(images);
        c.arg("--work-path").arg(work);
        if o.leave_running {
            c.arg("--leave-running");
        }
        if o.pre_dump {
            c.arg("--pre-dump");
        }
        if let Some(p) = &o.parent {
            c.arg("--parent-path").arg(p);
        }
        if let Some(addr) = &o.lazy_pages {
            c.args(["--lazy-pages", "--page-server", addr]);
        }
        c.arg(id);
        c
    }

    /// The container's init process and status, read from runc's own state file: a
    /// `runc state` costs a process start, and the agent asks often (also while a
    /// function is frozen). `None` when runc does not know the container.
    pub fn state(&self, id: &str) -> Option<State> {
        let raw = std::fs::read(self.root.join(id).join("state.json")).ok()?;
        let st: StateFile = serde_json::from_slice(&raw).ok()?;
        let pid = st.init_process_pid;
        // The pid may have been reused since: the start time tells the same process apart.
        let alive = proc_start_time(pid) == Some(st.init_process_start);
        let status = match (alive, freezer_state(&st.cgroup_paths)) {
            (false, _) => "stopped",
            (true, Some(s)) if s == "FROZEN" => "paused",
            (true, _) => "running",
        };
        Some(State {
            status: status.into(),
            pid,
            cgroups: st.cgroup_paths,
        })
    }

    /// Freezes the container with the cgroup v1 freezer and returns once every task is
    /// frozen. CRIU then finds it frozen and skips its own freeze, which sleeps in 100 ms
    /// steps while the state reads FREEZING (criu/seize.c). The v1 freezer has no change
    /// notification: the state is re-read every 100 µs (a freeze takes well under 1 ms).
    pub fn freeze(&self, id: &str) -> Result<()> {
        let st = self
            .state(id)
            .with_context(|| format!("{id} is not running"))?;
        let file =
            freezer_file(&st.cgroups).with_context(|| format!("{id} has no freezer cgroup"))?;
        std::fs::write(&file, "FROZEN").with_context(|| format!("cannot freeze {id}"))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            if std::fs::read_to_string(&file)?.trim() == "FROZEN" {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                let _ = std::fs::write(&file, "THAWED");
                bail!("{id} did not freeze within 5 s");
            }
            std::thread::sleep(std::time::Duration::from_micros(100));
        }
    }

    pub fn thaw(&self, id: &str) -> Result<()> {
        let st = self
            .state(id)
            .with_context(|| format!("{id} is not running"))?;
        let file =
            freezer_file(&st.cgroups).with_context(|| format!("{id} has no freezer cgroup"))?;
        std::fs::write(&file, "THAWED").with_context(|| format!("cannot thaw {id}"))
    }

    /// Sets the container's CFS quota (`None`: unlimited), straight on its cgroup.
    pub fn set_cpu_quota(&self, id: &str, period_us: u64, quota_us: Option<i64>) -> Result<()> {
        let st = self
            .state(id)
            .with_context(|| format!("{id} is not running"))?;
        let dir = st
            .cgroups
            .get("cpu")
            .with_context(|| format!("{id} has no cpu cgroup"))?;
        std::fs::write(dir.join("cpu.cfs_period_us"), period_us.to_string())?;
        std::fs::write(
            dir.join("cpu.cfs_quota_us"),
            quota_us.unwrap_or(-1).to_string(),
        )
        .with_context(|| format!("cannot set the CPU quota of {id}"))
    }

    /// Sends `signal` (a name such as `USR1` or `SIGUSR1`) to the container's init.
    pub fn kill(&self, id: &str, signal: &str) -> Result<()> {
        let sig = signal_number(signal)?;
        let st = self
            .state(id)
            .with_context(|| format!("{id} is not running"))?;
        // SAFETY: kill(2) on a pid we just checked is this container's init.
        if unsafe { libc::kill(st.pid as i32, sig) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot send {signal} to {id}"));
        }
        Ok(())
    }

    /// Stops and removes the container; gone already is fine.
    pub fn delete(&self, id: &str) {
        let _ = self
            .cmd()
            .args(["delete", "-f", id])
            .stdin(Stdio::null())
            .output();
    }
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
