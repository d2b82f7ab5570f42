//! The agent calls a migration makes, as a trait: the controller drives real agents over
//! their API ([`agent_api::Client`]), and the rollback table (the paper's Table 1) is tested
//! against a scripted agent, without a lab.
use agent_api::api::{Inspect, OpStats};
use agent_api::tls::Credentials;
use anyhow::Result;
use std::net::SocketAddr;

pub trait AgentCalls {
    fn addr(&self) -> SocketAddr;
    /// A fresh connection to the same agent (after one broke).
    fn reconnect(&self) -> Result<Box<dyn AgentCalls>>;
    fn inspect(&mut self, name: &str) -> Result<Inspect>;
    fn checkpoint(
        &mut self,
        name: &str,
        round: &str,
        leave_running: bool,
        parent: Option<&str>,
        pre_dump: bool,
        lazy_port: Option<u16>,
    ) -> Result<OpStats>;
    fn push(
        &mut self,
        name: &str,
        round: &str,
        to: SocketAddr,
        base: Option<&str>,
    ) -> Result<OpStats>;
    fn plug(&mut self, name: &str) -> Result<OpStats>;
    fn unplug(&mut self, name: &str) -> Result<OpStats>;
    fn restore(
        &mut self,
        name: &str,
        round: &str,
        lazy_from: Option<SocketAddr>,
        recovery: bool,
    ) -> Result<OpStats>;
    fn remove(&mut self, name: &str) -> Result<()>;
    /// The migration is settled: the source's journal of it goes.
    fn end_migration(&mut self, name: &str) -> Result<()>;
    fn await_pages(&mut self, name: &str) -> Result<OpStats>;
    fn resume_lazy(&mut self, name: &str) -> Result<()>;
    fn vm_check(&mut self, name: &str, caps: &vm::HostCaps) -> Result<()>;
    fn vm_migrate(&mut self, name: &str, uri: &str, to: &str) -> Result<vm::MigrationStats>;
    fn vm_await(&mut self, name: &str) -> Result<OpStats>;
    fn vm_resume(&mut self, name: &str) -> Result<()>;
}

/// A real agent, over its authenticated API.
pub struct Remote {
    pub client: agent_api::Client,
    pub creds: Credentials,
}

impl AgentCalls for Remote {
    fn addr(&self) -> SocketAddr {
        self.client.addr
    }
    fn reconnect(&self) -> Result<Box<dyn AgentCalls>> {
        Ok(Box::new(Remote {
            client: agent_api::Client::connect(self.client.addr, &self.creds)?,
            creds: self.creds.clone(),
        }))
    }
    fn inspect(&mut self, name: &str) -> Result<Inspect> {
        self.client.inspect(name)
    }
    fn checkpoint(
        &mut self,
        name: &str,
        round: &str,
        leave_running: bool,
        parent: Option<&str>,
        pre_dump: bool,
        lazy_port: Option<u16>,
    ) -> Result<OpStats> {
        self.client
            .checkpoint(name, round, leave_running, parent, pre_dump, lazy_port)
    }
    fn push(
        &mut self,
        name: &str,
        round: &str,
        to: SocketAddr,
        base: Option<&str>,
    ) -> Result<OpStats> {
        self.client.push(name, round, to, base)
    }
    fn plug(&mut self, name: &str) -> Result<OpStats> {
        self.client.plug(name)
    }
    fn unplug(&mut self, name: &str) -> Result<OpStats> {
        self.client.unplug(name)
    }
    fn restore(
        &mut self,
        name: &str,
        round: &str,
        lazy_from: Option<SocketAddr>,
        recovery: bool,
    ) -> Result<OpStats> {
        self.client.restore(name, round, lazy_from, recovery)
    }
    fn remove(&mut self, name: &str) -> Result<()> {
        self.client.remove(name)
    }
    fn end_migration(&mut self, name: &str) -> Result<()> {
        self.client.end_migration(name)
    }
    fn await_pages(&mut self, name: &str) -> Result<OpStats> {
        self.client.await_pages(name)
    }
    fn resume_lazy(&mut self, name: &str) -> Result<()> {
        self.client.resume_lazy(name)
    }
    fn vm_check(&mut self, name: &str, caps: &vm::HostCaps) -> Result<()> {
        self.client.vm_check(name, caps)
    }
    fn vm_migrate(&mut self, name: &str, uri: &str, to: &str) -> Result<vm::MigrationStats> {
        self.client.vm_migrate(name, uri, to)
    }
    fn vm_await(&mut self, name: &str) -> Result<OpStats> {
        self.client.vm_await(name)
    }
    fn vm_resume(&mut self, name: &str) -> Result<()> {
        self.client.vm_resume(name)
    }
}
