//! The VM baseline of corehop: a network function in a small QEMU VM (a Debian kernel and
//! an initramfs with busybox and the function), plugged into a host's bridge with the
//! function's service IP and stable MAC, and moved with QEMU's pre-copy live migration.
//!
//! - [`Image::build`]: the initramfs.
//! - [`Vm::start`], [`Vm::start_incoming`]: QEMU on a tap in the caller's network namespace.
//! - [`qmp::Qmp`]: the QMP client.
//! - [`labhost::lab_host_setup`]: a guest that runs a corehop lab itself (runc, CRIU).
//! - [`guest_agent::read_file`]: a file inside a running guest, through QEMU's guest agent.
//! - [`StreamTls`]: mutual TLS on the migration stream, with the agents' keys.
//! - [`pre_live_checks`], [`migrate`], [`live_migrate`]: the migration, timed as the
//!   paper's Tvm = Tpre + Tl + Tpost.
//!
//! Setup: `scripts/setup-vm.sh` fetches the guest kernel and its NIC modules.
pub mod guest_agent;
pub mod image;
pub mod labhost;
pub mod machine;
pub mod migrate;
pub mod qmp;
pub mod tls;

pub use image::{guest_kernel, vm_dir, GuestSetup, Image};
pub use machine::{kvm_works, Accel, Vm, VmSpec};
pub use migrate::{
    live_migrate, mem_available, migrate, migrate_with, pre_live_checks, run_arrived, HostCaps,
    MigrateOptions, MigrationError, MigrationStats, PreLiveError, INCOMING_PORT, MEMORY_MARGIN_MB,
};
pub use tls::StreamTls;
