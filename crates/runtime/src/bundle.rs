//! OCI bundles: a read-only rootfs holding the program and the shared libraries it needs,
//! tmpfs for every writable path, and the config.json runc runs.
use crate::flavor::Flavor;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where the program sits inside the rootfs.
pub const PROGRAM_PATH: &str = "/bin/app";

/// Everything needed to build the same container on any host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    /// Program on the host machine, copied into the rootfs with its shared libraries.
    pub program: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    /// Files placed in the (read-only) rootfs: absolute path inside -> content.
    #[serde(default)]
    pub files: Vec<(String, String)>,
    pub service_ip: Ipv4Addr,
    pub prefix_len: u8,
    pub flavor_name: String,
    pub flavor: Flavor,
    /// Extra capabilities (e.g. CAP_NET_ADMIN for the SPGW's SGi device).
    #[serde(default)]
    pub caps: Vec<String>,
    /// Give the container /dev/net/tun. A TUN file its tasks hold at a dump moves with them
    /// (see [`crate::tun`]).
    #[serde(default)]
    pub tun: bool,
    /// The TUN devices the running function holds, as its host saw them when it was last
    /// inspected (a migration's source, filled in by its agent): the destination re-makes
    /// them when it is prepared, and opens the files its restore hands over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tun_devices: Vec<crate::tun::TunDevice>,
    /// SGi device the GTP Module Initializer creates before the function starts or restores.
    #[serde(default)]
    pub sgi: Option<crate::sgi::SgiSpec>,
    /// The GTP Tunnel List Handler's files inside the container: where the function keeps
    /// its active tunnel list, and where a list to adopt is left for it (see crates/spgw).
    #[serde(default)]
    pub tunnel_list: Option<TunnelListSpec>,
    /// What runs the function: a runc container, or a QEMU VM (the paper's baseline).
    #[serde(default)]
    pub runtime: Runtime,
    /// What a VM's guest needs besides the program and its libraries (VMs only).
    #[serde(default, skip_serializing_if = "GuestExtras::is_empty")]
    pub guest: GuestExtras,
}

/// A third-party program's needs in its guest (e.g. NextEPC's MME: the freeDiameter
/// plugins it dlopens, the kernel's SCTP module, and the SCTP-over-UDP port set before it
/// opens its socket).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GuestExtras {
    /// Host files copied to the same path in the guest with their shared libraries
    /// (plugins a program loads with dlopen, which no `ldd` of it lists; helper tools).
    #[serde(default)]
    pub programs: Vec<PathBuf>,
    /// Kernel module lists of scripts/setup-vm.sh (`sctp`, `lab`), loaded in order after
    /// the base list.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Shell commands the guest's init runs in order before the program; the first that
    /// fails stops the boot.
    #[serde(default)]
    pub init: Vec<String>,
}

impl GuestExtras {
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty() && self.modules.is_empty() && self.init.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    #[default]
    Container,
    Vm,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Container => "container",
            Runtime::Vm => "vm",
        }
    }
}

impl std::str::FromStr for Runtime {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "container" => Ok(Runtime::Container),
            "vm" => Ok(Runtime::Vm),
            _ => bail!("unknown runtime {s:?}: use container or vm"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TunnelListSpec {
    pub file: String,
    pub sync_file: String,
}

impl TunnelListSpec {
    /// Where the host sees a container path of process `pid`.
    pub fn host_path(pid: i64, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{pid}/root")).join(inside.trim_start_matches('/'))
    }
}

impl ContainerSpec {
    /// A plain container: default capabilities, no extra files, no SGi device.
    pub fn new(
        name: &str,
        program: PathBuf,
        args: Vec<String>,
        service_ip: Ipv4Addr,
        prefix_len: u8,
        flavor: &str,
    ) -> Result<Self> {
        lab::spec::validate_name(name, "container")?;
        Ok(ContainerSpec {
            name: name.into(),
            program,
            args,
            env: vec![],
            files: vec![],
            service_ip,
            prefix_len,
            flavor_name: flavor.into(),
            flavor: crate::flavor::flavor(flavor)?,
            caps: vec![],
            tun: false,
            tun_devices: vec![],
            sgi: None,
            tunnel_list: None,
            runtime: Runtime::Container,
            guest: GuestExtras::default(),
        })
    }
}

/// The one writable path: the rootfs itself stays read-only, so its size and content are
/// identical on every host and a restore never meets a rootfs mismatch. It is a tmpfs the
/// agent mounts on the host (the bundle's [`WRITABLE_DIR`]) and carries itself, see
/// [`crate::writable`]; [`LINKED_TO_WRITABLE`] point into it.
pub const WRITABLE_PATH: &str = "/run";
/// Conventional writable folders, symlinks into [`WRITABLE_PATH`] in the rootfs.
pub const LINKED_TO_WRITABLE: &[&str] = &["/tmp", "/var"];
/// The bundle's folder bound at /dev, its device nodes made when the bundle is built, the
/// same on every host: runc would mount a tmpfs there, which CRIU dumps and restores with
/// a `tar | gzip` pair each way (~5 ms each, measured).
pub const DEV_DIR: &str = "dev";
/// The bundle's folder bound at [`WRITABLE_PATH`], a tmpfs of the host's.
pub const WRITABLE_DIR: &str = "writable";

/// Paths runc masks (a bind mount of /dev/null each). No /sys/firmware: runc masks a folder
/// with a tmpfs, one more for CRIU to tar.
const MASKED_PATHS: &[&str] = &["/proc/kcore", "/proc/keys", "/proc/timer_list"];

/// Device nodes runc gives every container, and /dev/net/tun where asked.
fn device_paths(spec: &ContainerSpec) -> Vec<String> {
    let mut d: Vec<String> = [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if spec.tun {
        d.push("/dev/net/tun".into());
    }
    d
}

/// What CRIU must know of the container built in `bundle` with namespace `netns`.
pub fn layout(spec: &ContainerSpec, bundle: &Path, netns: &Path) -> crate::containers::Layout {
    crate::containers::Layout {
        rootfs: bundle.join("rootfs"),
        dev: bundle.join(DEV_DIR),
        writable: bundle.join(WRITABLE_DIR),
        netns: netns.to_path_buf(),
        masked: MASKED_PATHS.iter().map(|m| m.to_string()).collect(),
        devices: device_paths(spec),
    }
}

const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_AUDIT_WRITE",
];

/// Builds `dir/rootfs` and `dir/config.json`; returns the rootfs digest.
pub fn build(spec: &ContainerSpec, dir: &Path, netns: &Path, cgroup: &str) -> Result<String> {
    lab::spec::validate_name(&spec.name, "container")?;
    let rootfs = dir.join("rootfs");
    for d in [&rootfs, &dir.join(DEV_DIR)] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
    }
    make_dev(spec, &dir.join(DEV_DIR))?;
    for d in ["proc", "dev", "sys", "etc", "bin", &WRITABLE_PATH[1..]] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    for l in LINKED_TO_WRITABLE {
        std::os::unix::fs::symlink(&WRITABLE_PATH[1..], rootfs.join(&l[1..]))?;
    }
    copy_into(&spec.program, &rootfs, Path::new(PROGRAM_PATH))
        .with_context(|| format!("cannot use program {}", spec.program.display()))?;
    for lib in shared_libs(&spec.program)? {
        copy_into(&lib, &rootfs, &lib)?;
    }
    std::fs::write(rootfs.join("etc/hostname"), format!("{}\n", spec.name))?;
    std::fs::write(
        rootfs.join("etc/hosts"),
        format!("127.0.0.1 localhost\n{} {}\n", spec.service_ip, spec.name),
    )?;
    for (path, content) in &spec.files {
        let rel = inside(path)?;
        if LINKED_TO_WRITABLE
            .iter()
            .chain([&WRITABLE_PATH])
            .any(|t| rel.starts_with(&t[1..]))
        {
            bail!("file {path} would be hidden by the tmpfs mounted on its folder");
        }
        let p = rootfs.join(rel);
        std::fs::create_dir_all(p.parent().unwrap_or(&rootfs))?;
        std::fs::write(&p, content)?;
    }
    let config = config_json(spec, netns, cgroup, dir);
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    digest(&rootfs)
}

/// A path inside the container, made relative; refuses `..` so a spec cannot write outside.
fn inside(path: &str) -> Result<&Path> {
    let p = Path::new(path);
    if !p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        bail!("container path {path:?} must be absolute and without '..'");
    }
    Ok(p.strip_prefix("/").unwrap_or(p))
}

fn copy_into(src: &Path, rootfs: &Path, dest: &Path) -> Result<()> {
    let d = rootfs.join(dest.strip_prefix("/").unwrap_or(dest));
    std::fs::create_dir_all(d.parent().unwrap_or(rootfs))?;
    std::fs::copy(src, &d).with_context(|| format!("cannot copy {}", src.display()))?;
    Ok(())
}

/// The shared libraries (and loader) a dynamic program needs, as `ldd` resolves them.
fn shared_libs(program: &Path) -> Result<Vec<PathBuf>> {
    if !program.is_file() {
        bail!("{} is not a file", program.display());
    }
    let out = std::process::Command::new("ldd")
        .arg(program)
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // Static programs make ldd fail with "not a dynamic executable": they need nothing.
    Ok(text
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// sha256 over the rootfs' file paths and contents, in sorted order.
pub fn digest(rootfs: &Path) -> Result<String> {
    let mut files = Vec::new();
    collect(rootfs, rootfs, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for rel in files {
        h.update(rel.as_bytes());
        h.update([0]);
        let p = rootfs.join(&rel);
        // A symlink counts by its target, never followed (it may point at a folder).
        match std::fs::read_link(&p) {
            Ok(target) => h.update(target.as_os_str().as_encoded_bytes()),
            Err(_) => h.update(std::fs::read(&p)?),
        }
    }
    Ok(hex::encode(h.finalize()))
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            collect(base, &p, out)?;
        } else {
            out.push(p.strip_prefix(base)?.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// /dev as runc would fill it (its default devices, /dev/net/tun where asked, the
/// symlinks), in a folder of the bundle.
fn make_dev(spec: &ContainerSpec, dev: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    std::fs::create_dir_all(dev.join("pts"))?;
    let mut nodes = vec![
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    if spec.tun {
        std::fs::create_dir_all(dev.join("net"))?;
        nodes.push(("net/tun", 10, 200));
    }
    for (name, major, minor) in nodes {
        let p = std::ffi::CString::new(dev.join(name).as_os_str().as_bytes())?;
        // SAFETY: mknod(2) with a valid path; a character device, mode 0666.
        if unsafe {
            libc::mknod(
                p.as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot create /dev/{name}"));
        }
        // Not narrowed by the umask.
        std::fs::set_permissions(
            dev.join(name),
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))?;
    }
    Ok(())
}

fn config_json(
    spec: &ContainerSpec,
    netns: &Path,
    cgroup: &str,
    bundle: &Path,
) -> serde_json::Value {
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|c| c.to_string()).collect();
    caps.extend(spec.caps.iter().cloned());
    let mut args = vec![PROGRAM_PATH.to_string()];
    args.extend(spec.args.iter().cloned());
    let mut env = vec!["PATH=/bin".to_string()];
    env.extend(spec.env.iter().cloned());
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "bind", "source": bundle.join(DEV_DIR),
               "options": ["rbind", "rw", "nosuid"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    mounts.push(
        json!({"destination": WRITABLE_PATH, "type": "bind", "source": bundle.join(WRITABLE_DIR),
               "options": ["rbind", "rw", "nosuid", "nodev"]}),
    );
    let mut devices = vec![json!({"allow": false, "access": "rwm"})];
    let mut dev_nodes = vec![];
    if spec.tun {
        devices
            .push(json!({"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}));
        dev_nodes.push(
            json!({"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200,
                              "fileMode": 438, "uid": 0, "gid": 0}),
        );
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "ambient": caps},
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": spec.name,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroup,
            "resources": {
                "devices": devices,
                // The CPU quota is set by the agent once the function runs (after a start
                // or a restore): a restore under a 0.5-CPU quota is throttled mid-way.
                "memory": {"limit": spec.flavor.memory_mb * 1024 * 1024}
            },
            "devices": dev_nodes,
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
                {"type": "network", "path": netns}
            ],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}
