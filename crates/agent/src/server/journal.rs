//! Who migrates a function from this host. A migration begins by writing its journal here,
//! at the source, where it outlives the controller; the controller's lease is its
//! connection, so while it lives a second controller is refused, and once it dies (its
//! kernel closes the connection) the journal waits for `corehop migrate --resume`.
use super::*;
use crate::api::Journal;

const JOURNAL: &str = "migration.json";

/// A controller's hold on a function's migration: its connection (numbered) to this agent.
pub(super) struct Lease {
    pub(super) conn: u64,
    sock: TcpStream,
}

impl Lease {
    pub(super) fn new(conn: u64, s: &ServerStream) -> Result<Lease> {
        Ok(Lease {
            conn,
            sock: s.sock.try_clone()?,
        })
    }

    /// Whether the controller still lives: its kernel has not closed the connection. Asked
    /// of the socket, since the connection's thread may be busy with its last request.
    fn alive(&self) -> bool {
        wire::waiting(&self.sock) != wire::Waiting::Closed
    }
}

/// Whether `name`'s migration is leased to a live controller other than connection `conn`.
fn held_by_another(leases: &HashMap<String, Lease>, name: &str, conn: u64) -> bool {
    leases
        .get(name)
        .is_some_and(|l| l.conn != conn && l.alive())
}

impl Agent {
    /// Answers the journal of an interrupted migration instead, if one waits here: it must
    /// be settled first.
    pub(super) fn begin_migration(
        &self,
        name: &str,
        journal: &Journal,
        lease: Lease,
    ) -> Result<Option<Journal>> {
        let (dir, _) = self.existing(name)?;
        let mut leases = lock(&self.leases);
        if let Some(j) = read(&dir)? {
            if held_by_another(&leases, name, lease.conn) {
                bail!(
                    "{name} is being migrated to {} ({}) by another controller ({}) since {}; wait for it to end",
                    j.to, j.method, j.controller, j.started_unix_ms
                );
            }
            return Ok(Some(j));
        }
        let tmp = dir.join(format!(".{JOURNAL}"));
        std::fs::write(&tmp, serde_json::to_vec(journal)?)?;
        std::fs::rename(&tmp, dir.join(JOURNAL))?;
        leases.insert(name.into(), lease);
        Ok(None)
    }

    /// The journal of `name`'s interrupted migration, if this host has one, leased to
    /// `conn` from now on; first, what this host was still doing (a dump, a restore the dead
    /// controller asked for) runs to its end.
    pub(super) fn take_over(&self, name: &str, lease: Lease) -> Result<Option<Journal>> {
        drop(lock(&self.busy));
        let Ok((dir, _)) = self.existing(name) else {
            return Ok(None);
        };
        let mut leases = lock(&self.leases);
        let journal = read(&dir)?;
        if let Some(j) = &journal {
            if held_by_another(&leases, name, lease.conn) {
                bail!(
                    "{name} is being migrated to {} by a controller that is still alive ({})",
                    j.to,
                    j.controller
                );
            }
            leases.insert(name.into(), lease);
        }
        Ok(journal)
    }

    /// The migration is settled: its journal goes. Only its controller may end it, or anyone
    /// once that controller is gone.
    pub(super) fn end_migration(&self, name: &str, conn: u64) -> Result<()> {
        let mut leases = lock(&self.leases);
        if held_by_another(&leases, name, conn) {
            bail!("the migration of {name} belongs to another controller");
        }
        leases.remove(name);
        if let Ok(dir) = self.dir(name) {
            match std::fs::remove_file(dir.join(JOURNAL)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// A connection ended: the migrations it led keep their journals, without a lease.
    pub(super) fn release_leases(&self, conn: u64) {
        lock(&self.leases).retain(|_, l| l.conn != conn);
    }
}

fn read(dir: &Path) -> Result<Option<Journal>> {
    match std::fs::read(dir.join(JOURNAL)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .with_context(|| format!("the migration journal in {} is corrupt", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}
