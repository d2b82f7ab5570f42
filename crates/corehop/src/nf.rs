//! `corehop nf`: the EPC functions as containers on lab hosts, and `nf run`, what runs inside
//! them. Each function gets its config as a TOML file in its read-only rootfs.
use agent::tls::Credentials;
use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nf {
    Hss,
    Mme,
    Spgw,
}

impl Nf {
    pub fn name(self) -> &'static str {
        match self {
            Nf::Hss => "hss",
            Nf::Mme => "mme",
            Nf::Spgw => "spgw",
        }
    }
    pub fn config_path(self) -> String {
        format!("/etc/corehop/{}.toml", self.name())
    }
}

pub const SUBSCRIBERS_PATH: &str = "/etc/corehop/subscribers.csv";

#[derive(Subcommand)]
pub enum NfCmd {
    /// Start a function as a container on a lab host.
    Start {
        nf: Nf,
        #[arg(long)]
        host: String,
        /// The function's config (TOML); default: `corehop nf config NF`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Subscribers (CSV imsi,k,opc,amf,sqn) the HSS imports at start; default: 1000 test USIMs.
        #[arg(long)]
        subscribers: Option<PathBuf>,
        #[arg(long, default_value = runtime::flavor::DEFAULT_FLAVOR)]
        flavor: String,
        /// container (runc) or vm (QEMU; the SPGW's guest sets up its own SGi TUN, forwarding
        /// and NAT).
        #[arg(long, default_value = "container")]
        runtime: runtime::bundle::Runtime,
    },
    /// Run a function in the foreground (what its container runs).
    Run {
        nf: Nf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a function's default config.
    Config { nf: Nf },
}

pub fn cmd(c: NfCmd, json: bool) -> Result<()> {
    match c {
        NfCmd::Config { nf } => {
            print!("{}", default_config(nf)?);
            Ok(())
        }
        NfCmd::Run { nf, config } => run(nf, config.as_deref()),
        NfCmd::Start {
            nf,
            host,
            config,
            subscribers,
            flavor,
            runtime,
        } => {
            let text = match &config {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
                None => default_config(nf)?,
            };
            let subs = match &subscribers {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
                None => default_subscribers_csv(),
            };
            let spec = lab::current()?;
            let mut cs = container(nf, &text, &subs, spec.prefix_len, &flavor)?;
            cs.runtime = runtime;
            crate::cmd::start(&spec, &host, &cs, json)
        }
    }
}

pub fn default_config(nf: Nf) -> Result<String> {
    Ok(match nf {
        Nf::Hss => toml::to_string(&hss::Config {
            subscribers_file: Some(SUBSCRIBERS_PATH.into()),
            ..Default::default()
        })?,
        // Two tracking areas: the RAN's `mixed` traffic runs two eNBs, in TACs 1 and 2.
        Nf::Mme => toml::to_string(&mme::Config {
            tacs: vec![1, 2],
            ..Default::default()
        })?,
        Nf::Spgw => toml::to_string(&spgw::Config::default())?,
    })
}

/// The HSS's 1000 test USIMs (IMSI 001010000000001..), which the RAN emulator also uses.
/// HSS, SPGW and MME started on `host` with their default configs, in the order each
/// needs the one before.
pub fn start_epc(
    spec: &lab::spec::LabSpec,
    creds: &Credentials,
    host: &str,
    flavor: &str,
) -> Result<()> {
    let mut a = agent::Client::connect(lab::agent_addr(spec, host)?, creds)?;
    for f in [Nf::Hss, Nf::Spgw, Nf::Mme] {
        a.run(&container(
            f,
            &default_config(f)?,
            &default_subscribers_csv(),
            spec.prefix_len,
            flavor,
        )?)?;
    }
    Ok(())
}

pub fn default_subscribers_csv() -> String {
    hss::store::to_csv(&hss::default_subscribers(1000))
}

/// The container of a function: its config decides its service IP (and, for the SPGW, the
/// SGi device the GTP Module Initializer creates).
pub fn container(
    nf: Nf,
    config: &str,
    subscribers: &str,
    prefix_len: u8,
    flavor: &str,
) -> Result<runtime::ContainerSpec> {
    let exe = std::env::current_exe()?;
    let args = vec![
        "nf".into(),
        "run".into(),
        nf.name().into(),
        "--config".into(),
        nf.config_path(),
    ];
    let ip = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(v4) => Ok(v4),
        _ => bail!("{} needs an IPv4 service address", nf.name()),
    };
    let mut files = vec![(nf.config_path(), config.to_string())];
    let (service_ip, sgi): (Ipv4Addr, _) = match nf {
        Nf::Hss => {
            let c = hss::Config::from_toml(config)?;
            files.push((SUBSCRIBERS_PATH.into(), subscribers.to_string()));
            (ip(c.advertised_ip)?, None)
        }
        Nf::Mme => (mme::Config::from_toml(config)?.s11_address, None),
        Nf::Spgw => {
            let c: spgw::Config = toml::from_str(config).context("bad SPGW config")?;
            let sgi = runtime::sgi::SgiSpec {
                name: c.sgi_tun.clone(),
                address: c.sgi_address.clone(),
                mtu: c.sgi_mtu.into(),
            };
            (c.s11_address, Some(sgi))
        }
    };
    let mut cs = runtime::ContainerSpec::new(nf.name(), exe, args, service_ip, prefix_len, flavor)?;
    cs.files = files;
    if nf == Nf::Spgw {
        cs.tun = true;
        cs.caps = vec!["CAP_NET_ADMIN".into()];
        cs.sgi = sgi;
        let c: spgw::Config = toml::from_str(config)?;
        if let (Some(file), Some(sync)) = (c.tunnels_file, c.tunnels_sync_file) {
            cs.tunnel_list = Some(runtime::bundle::TunnelListSpec {
                file: file.to_string_lossy().into(),
                sync_file: sync.to_string_lossy().into(),
            });
        }
    }
    Ok(cs)
}

/// Runs a function until SIGTERM or SIGINT, on one thread (CRIU then has one to freeze).
fn run(nf: Nf, config: Option<&Path>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let serve = async move {
            match nf {
                Nf::Hss => {
                    hss::serve(match config {
                        Some(p) => hss::Config::load(p)?,
                        None => hss::Config::default(),
                    })
                    .await
                }
                Nf::Mme => {
                    mme::serve(match config {
                        Some(p) => mme::Config::load(p)?,
                        None => mme::Config::default(),
                    })
                    .await
                }
                Nf::Spgw => {
                    spgw::serve(match config {
                        Some(p) => spgw::Config::from_file(p)?,
                        None => spgw::Config::default(),
                    })
                    .await
                }
            }
        };
        tokio::select! {
            r = serve => r,
            _ = term.recv() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
