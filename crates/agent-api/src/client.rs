//! The controller's (and peer agents') side of the agent API.
use crate::api::*;
use crate::tls::{ClientStream, Credentials};
use crate::wire;
use anyhow::{anyhow, bail, Context, Result};
use runtime::ContainerSpec;
use serde::de::DeserializeOwned;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Client {
    stream: ClientStream,
    pub addr: SocketAddr,
}

pub use crate::wire::STALL_TIMEOUT;

/// Long operations (a checkpoint of a big function, a transfer on a slow link) get this long.
const OP_TIMEOUT: Duration = Duration::from_secs(600);

impl Client {
    pub fn connect(addr: SocketAddr, creds: &Credentials) -> Result<Self> {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).with_context(|| {
            format!("agent at {addr} is not reachable (is the lab up and its agent running?)")
        })?;
        wire::bound_silence(&tcp)?;
        let stream = creds
            .connect(tcp, addr)
            .with_context(|| format!("agent at {addr} refused us"))?;
        stream.sock.set_read_timeout(Some(OP_TIMEOUT))?;
        // A peer that stops taking data (link cut mid-transfer) fails the call instead of
        // hanging it; a slow but live link keeps draining the socket buffer.
        stream.sock.set_write_timeout(Some(STALL_TIMEOUT))?;
        Ok(Client { stream, addr })
    }

    /// Whether the connection can still carry a call: the peer has neither closed it nor
    /// sent anything unasked (an alert).
    pub fn is_open(&self) -> bool {
        wire::waiting(&self.stream.sock) == wire::Waiting::Nothing
    }

    pub fn call<T: DeserializeOwned>(&mut self, req: &impl serde::Serialize) -> Result<T> {
        wire::write_frame(&mut self.stream, req)?;
        self.answer()
    }

    fn answer<T: DeserializeOwned>(&mut self) -> Result<T> {
        let frame = wire::read_frame(&mut self.stream).map_err(|e| {
            // TLS 1.3 ends the client's handshake before the server has checked its
            // certificate: a refusal arrives as an alert on the first answer.
            let alert = e
                .chain()
                .filter_map(|c| c.downcast_ref::<std::io::Error>())
                .filter_map(|io| io.get_ref()?.downcast_ref::<rustls::Error>())
                .any(|t| matches!(t, rustls::Error::AlertReceived(_)));
            match alert {
                true => e.context(format!("agent at {} refused us", self.addr)),
                false => e.context(format!("agent at {} did not answer", self.addr)),
            }
        })?;
        match frame {
            Response::Ok { body } => {
                serde_json::from_value(body).context("unexpected answer from agent")
            }
            Response::Err { message } => Err(anyhow!(message)),
        }
    }

    /// Sends a request followed by `data` as a bulk body.
    pub fn call_with_body<T: DeserializeOwned>(&mut self, req: &Request, data: &[u8]) -> Result<T> {
        wire::write_frame(&mut self.stream, req)?;
        self.stream.write_all(data)?;
        self.stream.flush()?;
        self.answer()
    }

    pub fn hello(&mut self) -> Result<Hello> {
        self.call(&Request::Hello)
    }
    pub fn ps(&mut self) -> Result<Vec<ContainerInfo>> {
        self.call(&Request::Ps)
    }
    pub fn inspect(&mut self, name: &str) -> Result<Inspect> {
        self.call(&Request::Inspect { name: name.into() })
    }
    pub fn run(&mut self, spec: &ContainerSpec) -> Result<ContainerInfo> {
        self.call(&Request::Run { spec: spec.clone() })
    }
    pub fn remove(&mut self, name: &str) -> Result<()> {
        self.call(&Request::Remove { name: name.into() })
    }
    /// Returns the rootfs digest built here.
    pub fn prepare(&mut self, spec: &ContainerSpec) -> Result<String> {
        self.call(&Request::Prepare { spec: spec.clone() })
    }
    pub fn checkpoint(
        &mut self,
        name: &str,
        round: &str,
        leave_running: bool,
        parent: Option<&str>,
        pre_dump: bool,
        lazy_port: Option<u16>,
    ) -> Result<OpStats> {
        self.call(&Request::Checkpoint {
            name: name.into(),
            round: round.into(),
            leave_running,
            parent: parent.map(str::to_string),
            pre_dump,
            lazy_port,
        })
    }
    pub fn push(
        &mut self,
        name: &str,
        round: &str,
        to: SocketAddr,
        base: Option<&str>,
    ) -> Result<OpStats> {
        self.call(&Request::Push {
            name: name.into(),
            round: round.into(),
            to,
            base: base.map(str::to_string),
        })
    }
    /// `Some`: not begun, an interrupted migration's journal waits to be settled.
    pub fn begin_migration(&mut self, name: &str, journal: &Journal) -> Result<Option<Journal>> {
        self.call(&Request::BeginMigration {
            name: name.into(),
            journal: journal.clone(),
        })
    }
    pub fn take_over(&mut self, name: &str) -> Result<Option<Journal>> {
        self.call(&Request::TakeOver { name: name.into() })
    }
    pub fn end_migration(&mut self, name: &str) -> Result<()> {
        self.call(&Request::EndMigration { name: name.into() })
    }
    pub fn dial(&mut self, to: SocketAddr) -> Result<()> {
        self.call(&Request::Dial { to })
    }
    pub fn plug(&mut self, name: &str) -> Result<OpStats> {
        self.call(&Request::Plug { name: name.into() })
    }
    pub fn unplug(&mut self, name: &str) -> Result<OpStats> {
        self.call(&Request::Unplug { name: name.into() })
    }
    pub fn restore(
        &mut self,
        name: &str,
        round: &str,
        lazy_from: Option<SocketAddr>,
        recovery: bool,
    ) -> Result<OpStats> {
        self.call(&Request::Restore {
            name: name.into(),
            round: round.into(),
            lazy_from,
            recovery,
        })
    }
    pub fn vm_incoming(&mut self, spec: &ContainerSpec, from: &str) -> Result<VmIncoming> {
        self.call(&Request::VmIncoming {
            spec: spec.clone(),
            from: from.into(),
        })
    }
    pub fn vm_check(&mut self, name: &str, caps: &vm::HostCaps) -> Result<()> {
        self.call(&Request::VmCheck {
            name: name.into(),
            caps: caps.clone(),
        })
    }
    pub fn vm_migrate(&mut self, name: &str, uri: &str, to: &str) -> Result<vm::MigrationStats> {
        self.call(&Request::VmMigrate {
            name: name.into(),
            uri: uri.into(),
            to: to.into(),
        })
    }
    pub fn vm_await(&mut self, name: &str) -> Result<OpStats> {
        self.call(&Request::VmAwait { name: name.into() })
    }
    pub fn vm_resume(&mut self, name: &str) -> Result<()> {
        self.call(&Request::VmResume { name: name.into() })
    }
    pub fn await_pages(&mut self, name: &str) -> Result<OpStats> {
        self.call(&Request::AwaitPages { name: name.into() })
    }
    pub fn resume_lazy(&mut self, name: &str) -> Result<()> {
        self.call(&Request::ResumeLazy { name: name.into() })
    }

    /// Fails unless the host can checkpoint and restore.
    pub fn require_criu(&mut self) -> Result<Hello> {
        let h = self.hello()?;
        if h.criu.is_none() {
            bail!(
                "host {} has no working CRIU: {} (run `make setup` there)",
                h.host,
                h.criu_error.as_deref().unwrap_or("unknown reason")
            );
        }
        Ok(h)
    }
}
