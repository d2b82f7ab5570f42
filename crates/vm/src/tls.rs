//! Mutual TLS on QEMU's migration stream, with QEMU's own `tls-creds-x509` (GnuTLS) and the
//! PEM files the agents' connections use: a VM's memory (the HSS's keys among it) crosses
//! the fabric sealed as a container's images do, a destination takes state only from the
//! source host it was told of, and a source sends only to the destination host's certificate.
use crate::qmp::Qmp;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::{Path, PathBuf};

/// QOM ids of the objects made here (one of each per QEMU).
const CREDS: &str = "corehop-migration-tls";
const AUTHZ: &str = "corehop-migration-authz";

/// One end's keys and the host at the other end.
#[derive(Debug, Clone)]
pub struct StreamTls {
    pub keys: lab::pki::Files,
    /// At a source, the destination's host: its certificate must carry
    /// [`lab::pki::agent_dns`] of it. At a destination, the source's host: only a
    /// certificate whose subject is `CN=<peer>` (what `lab up` makes; an operator's agent
    /// certificates must follow it) may send the state.
    pub peer: String,
}

#[derive(Clone, Copy)]
enum End {
    Source,
    Destination,
}

impl End {
    /// QEMU's name, which is also the prefix of its file names in the credentials folder.
    fn endpoint(self) -> &'static str {
        match self {
            End::Source => "client",
            End::Destination => "server",
        }
    }
}

/// Makes the stream of a QEMU started with `-incoming defer` TLS, before it listens.
pub(crate) fn destination(q: &mut Qmp, run_dir: &Path, tls: &StreamTls) -> Result<()> {
    secure(q, run_dir, tls, End::Destination)
}

/// Makes the next outgoing migration of a running QEMU TLS, or clear with `None` (a VM
/// that arrived over TLS keeps its destination's parameters, which would not serve).
pub(crate) fn source(q: &mut Qmp, run_dir: &Path, tls: Option<&StreamTls>) -> Result<()> {
    match tls {
        Some(tls) => secure(q, run_dir, tls, End::Source),
        None => {
            q.execute("migrate-set-parameters", Some(json!({ "tls-creds": "" })))?;
            Ok(())
        }
    }
}

fn secure(q: &mut Qmp, run_dir: &Path, tls: &StreamTls, end: End) -> Result<()> {
    let dir = credentials_dir(run_dir, &tls.keys, end)?;
    // A QEMU that migrated (or failed to) before still holds the objects of that attempt,
    // with another peer: made afresh each time. Deleting one that does not exist fails,
    // which is the usual case.
    let _ = q.object_del(CREDS);
    q.object_add(json!({
        "qom-type": "tls-creds-x509",
        "id": CREDS,
        "dir": dir,
        "endpoint": end.endpoint(),
        "verify-peer": true,
    }))
    .with_context(|| {
        format!(
            "QEMU refused the TLS keys {} / {}",
            tls.keys.cert.display(),
            tls.keys.key.display()
        )
    })?;
    let params = match end {
        End::Source => json!({
            "tls-creds": CREDS,
            "tls-hostname": lab::pki::agent_dns(&tls.peer),
        }),
        End::Destination => {
            let _ = q.object_del(AUTHZ);
            q.object_add(json!({
                "qom-type": "authz-simple",
                "id": AUTHZ,
                "identity": format!("CN={}", tls.peer),
            }))?;
            json!({ "tls-creds": CREDS, "tls-authz": AUTHZ })
        }
    };
    q.execute("migrate-set-parameters", Some(params))?;
    Ok(())
}

/// QEMU reads its keys from a folder of fixed file names (`ca-cert.pem`,
/// `<endpoint>-cert.pem`, `<endpoint>-key.pem`): links to the agent's files, so the private
/// key is never copied.
fn credentials_dir(run_dir: &Path, keys: &lab::pki::Files, end: End) -> Result<PathBuf> {
    let dir = run_dir.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let e = end.endpoint();
    for (file, name) in [
        (&keys.ca, "ca-cert.pem".to_string()),
        (&keys.cert, format!("{e}-cert.pem")),
        (&keys.key, format!("{e}-key.pem")),
    ] {
        let target = std::path::absolute(file)
            .with_context(|| format!("cannot resolve {}", file.display()))?;
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    Ok(dir)
}
