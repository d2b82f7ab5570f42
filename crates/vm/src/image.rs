//! The guest's root filesystem: one gzip'd newc cpio initramfs holding busybox, the NIC
//! modules, the network function at `/bin/app` with its shared libraries, extra files and
//! an `/init` that brings eth0 up from the kernel command line and runs the function.
//!
//! The archive is written with the `cpio` crate (newc writer) and `flate2` rather than
//! the `cpio` tool: Debian does not install GNU cpio by default, and writing entries
//! ourselves gives root ownership, modes and the /dev/console node without staging a
//! tree on disk (which would need root-owned files and mknod). flate2 uses the system
//! zlib: the pure-Rust backend is about 15 times slower in unoptimized (test) builds,
//! which made building an image take 8 s instead of 1.
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Kernel command-line keys `/init` reads. Keys with a dot are module parameters to the
/// kernel, which it ignores for unknown modules instead of handing them to init as args.
pub const CMDLINE_IP: &str = "corehop.ip";
pub const CMDLINE_MAC: &str = "corehop.mac";
pub const CMDLINE_GW: &str = "corehop.gw";

/// Line `/init` prints on the console right before it starts the program, followed by
/// ` (guest uptime 5.43 s)`.
pub const APP_STARTED: &str = "corehop-vm: starting /bin/app";

/// The guest's uptime when `/init` started the program, read from a console log: the
/// guest-side boot time (kernel + init), free of host-side scheduling noise.
pub fn app_started_uptime(console: &str) -> Option<std::time::Duration> {
    let rest = &console[console.find(APP_STARTED)? + APP_STARTED.len()..];
    let rest = rest.trim_start().strip_prefix("(guest uptime ")?;
    let secs: f64 = rest.split_whitespace().next()?.parse().ok()?;
    std::time::Duration::try_from_secs_f64(secs).ok()
}

/// Where setup-vm.sh leaves the guest kernel and modules (`COREHOP_VM_DIR` overrides).
pub fn vm_dir() -> PathBuf {
    std::env::var_os("COREHOP_VM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/corehop/vm"))
}

/// The guest kernel from setup-vm.sh: the uncompressed `vmlinux` when there is one
/// (QEMU boots it through its PVH entry, sparing TCG the kernel's own xz decompression,
/// about 8 of 12 s to init here), else the compressed `vmlinuz`.
pub fn guest_kernel() -> Result<PathBuf> {
    let pvh = vm_dir().join("vmlinux");
    if pvh.is_file() {
        return Ok(pvh);
    }
    let k = vm_dir().join("vmlinuz");
    if !k.is_file() {
        bail!(
            "no guest kernel at {}: run scripts/setup-vm.sh (as root) first",
            k.display()
        );
    }
    Ok(k)
}

/// What a function needs in its guest besides busybox, itself and its files.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GuestSetup {
    /// Host programs copied to the same path in the guest, with their shared libraries.
    pub programs: Vec<PathBuf>,
    /// Commands (program and arguments) `/init` runs in order once eth0 is up and before
    /// the function. The first that fails stops the boot: its output and the failed
    /// command are on the console and the VM powers off, rather than running a function
    /// that lacks what it needs.
    pub commands: Vec<Vec<String>>,
    /// Move the root to a tmpfs before anything else: the initramfs root cannot be
    /// pivoted away from, and runc and CRIU pivot_root into every container they start.
    pub tmpfs_root: bool,
    /// More module lists of setup-vm.sh's folder (e.g. `lab.order`) loaded after
    /// `load.order`, in order.
    pub module_lists: Vec<String>,
}

/// A built initramfs.
#[derive(Debug, Clone)]
pub struct Image {
    pub path: PathBuf,
    /// Compressed size in bytes.
    pub size: u64,
    /// Regular files in the archive (guest paths), for logs and checks.
    pub files: Vec<String>,
}

/// Entries collected before writing, so parent directories can be emitted first and only
/// once.
#[derive(Default)]
struct Tree {
    dirs: BTreeSet<String>,
    entries: Vec<Entry>,
}

enum Entry {
    File {
        path: String,
        mode: u32,
        data: Vec<u8>,
    },
    Symlink {
        path: String,
        target: String,
    },
    CharDev {
        path: String,
        major: u32,
        minor: u32,
    },
}

impl Tree {
    fn add_parents(&mut self, path: &str) {
        let mut p = Path::new(path).parent();
        while let Some(d) = p {
            let s = d.to_string_lossy();
            if s.is_empty() || s == "/" {
                break;
            }
            self.dirs.insert(s.into_owned());
            p = d.parent();
        }
    }
    fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.add_parents(path);
        self.entries.push(Entry::File {
            path: path.into(),
            mode,
            data,
        });
    }
    fn dir(&mut self, path: &str) {
        self.add_parents(path);
        self.dirs.insert(path.into());
    }
}

impl Image {
    /// Builds `out` (an initramfs, gzip'd newc cpio) that runs `program args...` as the
    /// guest's only service.
    ///
    /// `files` are `(host source path, guest destination path)` pairs copied as they are
    /// (mode kept), e.g. a function's config file. `program` is copied with its debug
    /// info stripped when `strip` is available (line tables are of no use in the guest and
    /// every byte is guest RAM that migration moves), and with the shared libraries `ldd`
    /// lists at the same paths. The kernel modules come from setup-vm.sh's folder.
    /// `setup` adds programs and the commands that prepare the guest for the function.
    pub fn build(
        program: &Path,
        args: &[String],
        files: &[(String, String)],
        setup: &GuestSetup,
        out: &Path,
    ) -> Result<Image> {
        let mut t = Tree::default();
        for d in [
            "/bin",
            "/sbin",
            "/usr/bin",
            "/usr/sbin",
            "/proc",
            "/sys",
            "/dev",
            "/tmp",
            "/run",
            "/etc",
            "/var",
            "/root",
            "/lib/modules",
        ] {
            t.dir(d);
        }
        // The kernel opens /dev/console for init before anything is mounted; without the
        // node init would run with no stdin/stdout and the program's log would be lost.
        t.entries.push(Entry::CharDev {
            path: "/dev/console".into(),
            major: 5,
            minor: 1,
        });
        t.entries.push(Entry::CharDev {
            path: "/dev/null".into(),
            major: 1,
            minor: 3,
        });

        let busybox = Path::new("/bin/busybox");
        let bb = std::fs::read(busybox)
            .context("cannot read /bin/busybox: install busybox-static (scripts/setup.sh)")?;
        t.file("/bin/busybox", 0o755, bb);
        // Only the shell is linked here (for the shebang and scripts); /init installs the
        // other applets itself, so the list always matches this busybox's build.
        t.entries.push(Entry::Symlink {
            path: "/bin/sh".into(),
            target: "busybox".into(),
        });
        for lib in shared_libs(busybox)? {
            add_host_file(&mut t, &lib, &lib, None)?;
        }

        for p in &setup.programs {
            if !p.is_absolute() {
                bail!("guest program {} must be an absolute path", p.display());
            }
            // Stripped like the function: a debug build's line tables are guest RAM.
            let data =
                stripped(p, out).with_context(|| format!("the guest needs {}", p.display()))?;
            t.file(&p.to_string_lossy(), 0o755, data);
            for lib in shared_libs(p)? {
                add_host_file(&mut t, &lib, &lib, None)?;
            }
        }
        if let Some(c) = setup.commands.iter().find(|c| c.is_empty()) {
            bail!("empty guest setup command in {c:?}");
        }

        // QEMU's guest agent, so the host can read files inside the guest.
        let ga = vm_dir().join("qemu-ga");
        if !ga.is_file() {
            bail!(
                "no guest agent at {}: run scripts/setup-vm.sh (as root) first",
                ga.display()
            );
        }
        add_host_file(&mut t, &ga, Path::new(GUEST_AGENT), None)?;
        for lib in shared_libs(&ga)? {
            add_host_file(&mut t, &lib, &lib, None)?;
        }

        let program_data = stripped(program, out)?;
        t.file("/bin/app", 0o755, program_data);
        for lib in shared_libs(program)? {
            add_host_file(&mut t, &lib, &lib, None)?;
        }

        let mods = vm_dir().join("modules");
        let mut load = String::new();
        // setup-vm.sh's lists each hold all they need beyond load.order, so two may share
        // a module: it is loaded once.
        let mut loaded = BTreeSet::new();
        for list in
            std::iter::once("load.order").chain(setup.module_lists.iter().map(String::as_str))
        {
            if list.contains('/') {
                bail!(
                    "module list {list:?} must be a file name in {}",
                    mods.display()
                );
            }
            let order = std::fs::read_to_string(mods.join(list)).with_context(|| {
                format!(
                    "no kernel module list {list} in {}: run scripts/setup-vm.sh (as root) first",
                    mods.display()
                )
            })?;
            for m in order.lines().map(str::trim).filter(|m| !m.is_empty()) {
                if m.contains('/') {
                    bail!("{}: bad module name {m:?}", mods.join(list).display());
                }
                if !loaded.insert(m.to_string()) {
                    continue;
                }
                let data = std::fs::read(mods.join(m)).with_context(|| {
                    format!("module {m} listed but missing in {}", mods.display())
                })?;
                t.file(&format!("/lib/modules/{m}"), 0o644, data);
                load.push_str(m);
                load.push('\n');
            }
        }
        t.file("/lib/modules/load.order", 0o644, load.into_bytes());

        for (src, dst) in files {
            if !dst.starts_with('/') || dst.split('/').any(|c| c == "..") {
                bail!("guest path {dst:?} (for {src}) must be absolute without `..`");
            }
            add_host_file(&mut t, Path::new(src), Path::new(dst), None)?;
        }
        t.file("/init", 0o755, init_script(args, setup).into_bytes());

        let files: Vec<String> = t
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::File { path, .. } => Some(path.clone()),
                _ => None,
            })
            .collect();
        write_archive(&t, out)?;
        let size = std::fs::metadata(out)?.len();
        tracing::debug!(
            "initramfs {} ({} bytes, {} files)",
            out.display(),
            size,
            files.len()
        );
        Ok(Image {
            path: out.to_path_buf(),
            size,
            files,
        })
    }
}

/// Copies a host file into the tree at `dst`, following symlinks (a library is usually a
/// link to a versioned file; the guest needs the bytes under the name the loader asks for).
fn add_host_file(t: &mut Tree, src: &Path, dst: &Path, mode: Option<u32>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
    if !meta.is_file() {
        bail!("{} is not a regular file", src.display());
    }
    let data = std::fs::read(src).with_context(|| format!("cannot read {}", src.display()))?;
    let dst = dst.to_string_lossy().into_owned();
    if t.entries
        .iter()
        .any(|e| matches!(e, Entry::File { path, .. } if *path == dst))
    {
        return Ok(());
    }
    t.file(
        &dst,
        mode.unwrap_or(meta.permissions().mode() & 0o7777),
        data,
    );
    Ok(())
}

/// The program's bytes, without debug info if `strip` can remove it.
fn stripped(program: &Path, out: &Path) -> Result<Vec<u8>> {
    if !program.is_file() {
        bail!("the program {} does not exist", program.display());
    }
    let tmp = out.with_extension("app.tmp");
    let ok = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&tmp)
        .arg(program)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let data = if ok {
        std::fs::read(&tmp)
    } else {
        tracing::debug!(
            "strip unavailable or failed; copying {} as is",
            program.display()
        );
        std::fs::read(program)
    };
    let _ = std::fs::remove_file(&tmp);
    data.with_context(|| format!("cannot read {}", program.display()))
}

/// The shared libraries (and the dynamic loader) `ldd` lists for `bin`; empty for a
/// static binary.
pub fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = std::process::Command::new("ldd")
        .arg(bin)
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run ldd (package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd exits non-zero for static binaries ("not a dynamic executable").
        let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
        if all.contains("not a dynamic executable") || all.contains("statically linked") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", bin.display(), all.trim());
    }
    parse_ldd(&text).with_context(|| format!("libraries of {}", bin.display()))
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>> {
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("statically linked") {
            continue;
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("library {} not found on this host", name.trim());
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Quotes a word for the busybox shell: single quotes, with embedded ones closed and
/// escaped.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Where the guest agent lives in the guest.
const GUEST_AGENT: &str = "/usr/sbin/qemu-ga";

/// Prefix of the console line `/init` prints when a setup command failed.
pub const SETUP_FAILED: &str = "corehop-vm: setup failed:";

/// The start of `/init` when [`GuestSetup::tmpfs_root`]: copy the initramfs into a tmpfs
/// and start over from there. switch_root empties the initramfs (its RAM is freed) and
/// execs `/init` again, which the environment variable tells to go on.
const TMPFS_ROOT: &str = r#"if [ -z "$COREHOP_TMPFS_ROOT" ]; then
  /bin/busybox mkdir /newroot
  /bin/busybox mount -t tmpfs -o mode=755 tmpfs /newroot
  for d in /*; do [ "$d" = /newroot ] || /bin/busybox cp -a "$d" /newroot/; done
  export COREHOP_TMPFS_ROOT=1
  exec /bin/busybox switch_root /newroot /init
fi
"#;

fn init_script(args: &[String], setup: &GuestSetup) -> String {
    let argv: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
    let mut steps = String::new();
    for cmd in &setup.commands {
        let line = cmd
            .iter()
            .map(|w| sh_quote(w))
            .collect::<Vec<_>>()
            .join(" ");
        steps.push_str(&format!(
            "if ! {line}; then\n  echo {} {}\n  poweroff -f\nfi\n",
            sh_quote(SETUP_FAILED),
            sh_quote(&line)
        ));
    }
    format!(
        r#"#!/bin/busybox sh
# corehop VM init (generated by crates/vm). Runs as PID 1: mounts, NIC modules, eth0 from
# the kernel command line, then the program. Nothing is respawned: when the program exits
# the VM powers off, so its end is visible to whoever started QEMU.
{tmpfs_root}/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
log() {{ echo "corehop-vm: $*"; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
for m in $(cat /lib/modules/load.order); do
  insmod "/lib/modules/$m" || log "insmod $m failed"
done
ip=; mac=; gw=
for w in $(cat /proc/cmdline); do
  case "$w" in
    {ip}=*) ip="${{w#{ip}=}}" ;;
    {mac}=*) mac="${{w#{mac}=}}" ;;
    {gw}=*) gw="${{w#{gw}=}}" ;;
  esac
done
ip link set lo up
# virtio-net probes asynchronously after insmod.
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 200 ]; do usleep 50000; n=$((n+1)); done
if [ ! -e /sys/class/net/eth0 ]; then
  log "no eth0 after 10 s (virtio-net missing?)"
elif [ -z "$ip" ]; then
  log "no {ip}= on the kernel command line; eth0 left down"
else
  [ -n "$mac" ] && ip link set eth0 address "$mac"
  ip addr add "$ip" dev eth0
  ip link set eth0 up
  [ -n "$gw" ] && ip route add default via "$gw"
  # Announce the address so bridges and peers learn where it lives now.
  arping -U -c 1 -I eth0 "${{ip%/*}}" >/dev/null 2>&1 &
  log "eth0 $ip $mac up"
fi
# QEMU's guest agent on the second serial port (the host's guest_agent socket).
{ga} -m isa-serial -p /dev/ttyS1 -f /run/qemu-ga.pid -t /run -d -l /dev/console || log "qemu-ga did not start"
{steps}log "starting /bin/app (guest uptime $(cut -d' ' -f1 /proc/uptime) s)"
/bin/app {argv}
rc=$?
log "/bin/app exited with status $rc; powering off"
sync
poweroff -f
"#,
        ip = CMDLINE_IP,
        mac = CMDLINE_MAC,
        gw = CMDLINE_GW,
        argv = argv.join(" "),
        steps = steps,
        ga = GUEST_AGENT,
        tmpfs_root = if setup.tmpfs_root { TMPFS_ROOT } else { "" },
    )
}

fn write_archive(t: &Tree, out: &Path) -> Result<()> {
    use cpio::newc::{trailer, Builder};
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = out.with_extension("tmp");
    let f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut gz =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::default());
    let mut ino = 1u32;
    let mut next = || {
        ino += 1;
        ino
    };
    // Paths in the archive are relative ("bin/app"), as the kernel's unpacker expects.
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    for d in &t.dirs {
        let w = Builder::new(&rel(d))
            .ino(next())
            .mode(0o040755)
            .nlink(2)
            .write(&mut gz, 0);
        w.finish()?;
    }
    for e in &t.entries {
        match e {
            Entry::File { path, mode, data } => {
                let len = u32::try_from(data.len())
                    .with_context(|| format!("{path} is over 4 GiB, too big for newc cpio"))?;
                let mut w = Builder::new(&rel(path))
                    .ino(next())
                    .mode(0o100000 | (mode & 0o7777))
                    .nlink(1)
                    .write(&mut gz, len);
                w.write_all(data)?;
                w.finish()?;
            }
            Entry::Symlink { path, target } => {
                let mut w = Builder::new(&rel(path))
                    .ino(next())
                    .mode(0o120777)
                    .nlink(1)
                    .write(&mut gz, target.len() as u32);
                w.write_all(target.as_bytes())?;
                w.finish()?;
            }
            Entry::CharDev { path, major, minor } => {
                let w = Builder::new(&rel(path))
                    .ino(next())
                    .mode(0o020600)
                    .nlink(1)
                    .rdev_major(*major)
                    .rdev_minor(*minor)
                    .write(&mut gz, 0);
                w.finish()?;
            }
        }
    }
    trailer(&mut gz)?;
    gz.finish()?.flush()?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_is_parsed() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        let libs = parse_ldd(text).unwrap();
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
        assert!(parse_ldd("garbage ( => \n=>\n").unwrap().is_empty());
    }

    #[test]
    fn guest_uptime_is_read_from_the_console() {
        let log = "noise\r\ncorehop-vm: eth0 up\r\ncorehop-vm: starting /bin/app (guest uptime 5.43 s)\r\n";
        assert_eq!(
            app_started_uptime(log),
            Some(std::time::Duration::from_millis(5430))
        );
        assert_eq!(app_started_uptime("corehop-vm: starting /bin/app"), None);
        assert_eq!(
            app_started_uptime("corehop-vm: starting /bin/app (guest uptime -1 s)"),
            None
        );
        assert_eq!(app_started_uptime(""), None);
    }

    #[test]
    fn args_are_quoted_for_the_shell() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        let s = init_script(
            &["--tcp".into(), "0.0.0.0:7000".into(), "$(x)".into()],
            &GuestSetup::default(),
        );
        assert!(s.contains("/bin/app '--tcp' '0.0.0.0:7000' '$(x)'"));
    }

    #[test]
    fn setup_commands_run_before_the_program_and_stop_the_boot_on_failure() {
        let s = init_script(
            &[],
            &GuestSetup {
                commands: vec![vec![
                    "nft".into(),
                    "add table ip t; add rule x \"y\"".into(),
                ]],
                ..Default::default()
            },
        );
        let step = s
            .find("if ! 'nft' 'add table ip t; add rule x \"y\"'; then")
            .expect(&s);
        assert!(step < s.find("/bin/app ").unwrap());
        assert!(s[step..].contains("poweroff -f\nfi"));
        assert!(s.contains(SETUP_FAILED));
    }

    #[test]
    fn a_tmpfs_root_is_switched_to_before_anything_else() {
        assert!(!init_script(&[], &GuestSetup::default()).contains("switch_root"));
        let s = init_script(
            &[],
            &GuestSetup {
                tmpfs_root: true,
                ..Default::default()
            },
        );
        let switch = s
            .find("exec /bin/busybox switch_root /newroot /init")
            .expect(&s);
        assert!(switch < s.find("/bin/busybox --install").unwrap());
        assert!(s[..switch].contains("if [ -z \"$COREHOP_TMPFS_ROOT\" ]"));
    }
}
