//! The global proactive GTP Tunnel List Handler (the paper's Appendix B): a master that
//! keeps the current tunnel list of every SPGW in the lab. Agents push a function's list
//! whenever it changes; a restore asks for the newest one, so an SPGW restored from an
//! older checkpoint, or onto another host after its host died, gets every tunnel. The
//! lists are kept on disk too, so a restarted master still knows them.
use crate::tls::Credentials;
use crate::wire;
use crate::Client;
use anyhow::{Context, Result};
use lab::spec::validate_name;
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum MasterRequest {
    /// `host` reports the current tunnel list of `function`.
    Put {
        function: String,
        host: String,
        tunnels: serde_json::Value,
    },
    Get {
        function: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub host: String,
    /// Milliseconds since the UNIX epoch when the master received it.
    pub at_ms: u64,
    pub tunnels: serde_json::Value,
}

pub struct Master {
    dir: PathBuf,
    tls: Credentials,
    lock: Mutex<()>,
}

pub fn serve(listen: SocketAddr, dir: PathBuf, tls: Credentials) -> Result<()> {
    std::fs::create_dir_all(&dir)?;
    let listener =
        TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    tracing::info!("tunnel master on {listen}, lists in {}", dir.display());
    let m = Arc::new(Master {
        dir,
        tls,
        lock: Mutex::new(()),
    });
    for conn in listener.incoming().flatten() {
        let m = m.clone();
        std::thread::spawn(move || {
            let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            if let Err(e) = m.connection(conn) {
                tracing::warn!(%peer, "connection ended: {e:#}");
            }
        });
    }
    Ok(())
}

impl Master {
    fn connection(&self, tcp: TcpStream) -> Result<()> {
        let mut s = self.tls.accept(tcp)?;
        s.sock.set_read_timeout(Some(Duration::from_secs(900)))?;
        loop {
            let req: MasterRequest = match wire::read_frame(&mut s) {
                Ok(r) => r,
                Err(e) if e.to_string() == "connection closed" => return Ok(()),
                Err(e) => return Err(e),
            };
            let answer = match self.handle(req) {
                Ok(body) => crate::api::Response::Ok { body },
                Err(e) => crate::api::Response::Err {
                    message: format!("tunnel master: {e:#}"),
                },
            };
            wire::write_frame(&mut s, &answer)?;
        }
    }

    fn handle(&self, req: MasterRequest) -> Result<serde_json::Value> {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match req {
            MasterRequest::Put {
                function,
                host,
                tunnels,
            } => {
                validate_name(&function, "function")?;
                anyhow::ensure!(tunnels.is_array(), "a tunnel list must be a JSON array");
                let at_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis() as u64;
                let e = Entry {
                    host,
                    at_ms,
                    tunnels,
                };
                let path = self.dir.join(format!("{function}.json"));
                let tmp = path.with_extension("json.tmp");
                std::fs::write(&tmp, serde_json::to_vec(&e)?)?;
                std::fs::rename(&tmp, &path)?;
                Ok(serde_json::Value::Null)
            }
            MasterRequest::Get { function } => {
                validate_name(&function, "function")?;
                match std::fs::read(self.dir.join(format!("{function}.json"))) {
                    Ok(b) => Ok(serde_json::to_value(serde_json::from_slice::<Entry>(&b)?)?),
                    Err(_) => Ok(serde_json::Value::Null),
                }
            }
        }
    }
}

/// The agents' side of the master.
pub fn put(
    master: SocketAddr,
    tls: &Credentials,
    function: &str,
    host: &str,
    tunnels: serde_json::Value,
) -> Result<()> {
    Client::connect(master, tls)?.call::<()>(&MasterRequest::Put {
        function: function.into(),
        host: host.into(),
        tunnels,
    })
}

pub fn get(master: SocketAddr, tls: &Credentials, function: &str) -> Result<Option<Entry>> {
    Client::connect(master, tls)?.call(&MasterRequest::Get {
        function: function.into(),
    })
}
