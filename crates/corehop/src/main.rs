//! corehop: live-migrate mobile core network functions between hosts and measure the cost.
mod cmd;
mod demo;
mod epc;
mod experiment;
mod faults;
mod nf;
mod session;
mod signalling;
mod soak;
mod state;
mod testsvc;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "corehop",
    version,
    about = "Live migration of mobile core network functions (HSS, MME, SPGW) between hosts, as containers (CRIU) or VMs (QEMU), with measurements"
)]
struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create, inspect or remove the lab: hosts as network namespaces on a fabric bridge.
    #[command(subcommand)]
    Lab(cmd::LabCmd),
    /// Run the per-host agent (started by `lab up`; on real machines, once per host).
    Agent(cmd::AgentArgs),
    /// Run the tunnel master (global proactive GTP Tunnel List Handler; started by `lab up`).
    TunnelMaster(cmd::MasterArgs),
    /// Run a program as a container on a lab host, with a service IP on the fabric.
    ///
    /// What moves with it at `corehop migrate`: its memory, threads and open files; its TCP
    /// connections, established ones included (CRIU's tcp-established: the peer sees no
    /// reset); UDP sockets; the TUN devices it opened (with --tun; each re-made at the
    /// destination with its addresses and routes, and its open file handed back by CRIU, so
    /// the program needs no help); the files it writes under /run, /tmp and /var (one tmpfs
    /// that moves with it), an SQLite database there included; its service IP.
    ///
    /// Raw IP sockets move too (with --cap CAP_NET_RAW; CRIU describes them from the socket
    /// itself, as this kernel has no raw sock_diag).
    ///
    /// What does not: kernel SCTP sockets (CRIU has no SCTP; this kernel has no SCTP at all:
    /// carry it over UDP, RFC 6951, as corehop's MME does). A migration of a program holding
    /// one is refused before anything is frozen, and it keeps running: "NAME cannot be
    /// checkpointed on HOST: task PID (COMM) holds a kernel SCTP socket: ...". Nothing
    /// outside the container moves: files of the host, processes it did not start.
    Run(cmd::RunArgs),
    /// List containers on every host.
    Ps,
    /// Stop and remove a container.
    Rm { name: String },
    /// Live-migrate a container to another host.
    Migrate(cmd::MigrateArgs),
    /// Standby checkpoint: ship a leave-running image of a function to another host.
    Checkpoint {
        name: String,
        #[arg(long)]
        to: String,
    },
    /// Restore a function from its standby checkpoint after its host died.
    Recover {
        name: String,
        #[arg(long)]
        on: String,
        /// Image round: `standby` (from `corehop checkpoint`) or `final` (left by a failed migration).
        #[arg(long, default_value = migrate::STANDBY_ROUND)]
        round: String,
    },
    /// A stateful TCP/UDP counter service, to prove migrations keep state and connections.
    Testsvc {
        #[arg(long, default_value = "0.0.0.0:7000")]
        tcp: std::net::SocketAddr,
        #[arg(long, default_value = "0.0.0.0:7001")]
        udp: std::net::SocketAddr,
    },
    /// EPC network functions: start one as a container, run one, print a default config.
    #[command(subcommand)]
    Nf(nf::NfCmd),
    /// The HSS's subscriber database.
    #[command(subcommand)]
    Hss(epc::HssCmd),
    /// eNB and UE emulator: attach UEs, ping through GTP-U, probe the control plane.
    Ran(epc::RanArgs),
    /// Run an experiment plan (function x method x parameter, N runs), resumable.
    Experiment(experiment::ExperimentArgs),
    /// The downtime benchmark: HSS, MME, SPGW x every method, interleaved in one lab
    /// session, then p50/p95 of downtime, app-probe outage and UE recovery, with ratios to VM
    /// PreCopy.
    Bench(experiment::BenchArgs),
    /// The fault matrix: every fault injected at every step boundary of every method, in a
    /// lab session of its own; each cell checked (bounded, serving once, client kept, retry).
    Faults(faults::FaultsArgs),
    /// Soak: many back-and-forth migrations of the SPGW or the MME with many UEs attached;
    /// tunnels and contexts kept, every agent's memory and open files flat.
    Soak(soak::SoakArgs),
    /// Migration in the middle of signalling: the MME, the SPGW and the HSS migrate one
    /// after another while UEs run a busy traffic mix; no procedure may fail, and the
    /// functions' views of every UE must agree afterwards.
    Signalling(signalling::SignallingArgs),
    /// Statistics, tables and figures of an experiment's results folder.
    Report {
        dir: std::path::PathBuf,
        /// Another results folder of the same plan (e.g. from another machine) whose runs
        /// join DIR's; Fig. 10 compares the CPU models. Repeatable.
        #[arg(long = "with")]
        with: Vec<std::path::PathBuf>,
    },
    /// Keep the CPUs busy (the CPU-load generator the experiments run in a cgroup).
    #[command(hide = true)]
    Burn,
    /// Hold a prepared function's inbound packets (the agent starts one per migration
    /// target): "ready" once held; "release" on stdin delivers them.
    #[command(hide = true)]
    Hold { netns: String, queue: u16 },
    /// The main job: lab up, a stateful function migrated live with a client attached, phases.
    Demo,
    /// Probe a counter service at a fixed rate and report gaps, reconnects and state.
    Probe(cmd::ProbeArgs),
}

fn main() {
    let cli = Cli::parse();
    // An experiment's progress bar owns the terminal: the in-process UE's per-run attach
    // and detach lines would bury it (RUST_LOG brings them back).
    let default_level = match cli.cmd {
        Cmd::Experiment(_) | Cmd::Bench(_) | Cmd::Faults(_) | Cmd::Soak(_) | Cmd::Signalling(_) => {
            "warn"
        }
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let json = cli.json;
    match cli.cmd {
        Cmd::Lab(c) => cmd::lab(c, json),
        Cmd::Agent(a) => cmd::agent(a),
        Cmd::TunnelMaster(a) => cmd::tunnel_master(a),
        Cmd::Run(a) => cmd::run(a, json),
        Cmd::Ps => cmd::ps(json),
        Cmd::Rm { name } => cmd::rm(&name),
        Cmd::Migrate(a) => cmd::migrate(a, json),
        Cmd::Testsvc { tcp, udp } => testsvc::serve(tcp, udp),
        Cmd::Probe(a) => cmd::probe(a, json),
        Cmd::Demo => demo::run(json),
        Cmd::Experiment(a) => experiment::run(a),
        Cmd::Bench(a) => experiment::bench(a),
        Cmd::Faults(a) => faults::run(a),
        Cmd::Soak(a) => soak::run(a),
        Cmd::Signalling(a) => signalling::run(a),
        Cmd::Report { dir, with } => experiment::report(&dir, &with),
        Cmd::Burn => experiment::burn(),
        Cmd::Hold { netns, queue } => lab::hold::serve(&netns, queue),
        Cmd::Checkpoint { name, to } => cmd::standby(&name, &to, json),
        Cmd::Recover { name, on, round } => cmd::recover(&name, &on, &round, json),
        Cmd::Nf(c) => nf::cmd(c, json),
        Cmd::Hss(c) => epc::hss(c, json),
        Cmd::Ran(a) => epc::ran(a, json),
    }
}
