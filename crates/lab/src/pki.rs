//! The lab's keys: a private CA that `lab up` makes, and a certificate per agent, for the
//! controller and for the tunnel master, which agent connections authenticate each other
//! with (mutual TLS). On real machines an operator supplies the same files from their own CA.
use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where a party's trust anchor, certificate chain and private key are, all PEM.
#[derive(Debug, Clone)]
pub struct Files {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The name an agent's certificate carries besides its address: a peer that sends images
/// must hold the certificate of the host it claims to be.
pub fn agent_dns(host: &str) -> String {
    format!("{host}.agent.corehop")
}

pub const CONTROLLER: &str = "controller";
pub const MASTER: &str = "master";

/// Folder of the lab's keys; `COREHOP_TLS_DIR` points the controller at an operator's.
pub fn dir() -> PathBuf {
    std::env::var_os("COREHOP_TLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(crate::paths::RUN_DIR).join("tls"))
}

/// The files of `who` (a host's name, [`CONTROLLER`] or [`MASTER`]) in `dir`.
pub fn files_in(dir: &Path, who: &str) -> Files {
    Files {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{who}.pem")),
        key: dir.join(format!("{who}.key")),
    }
}

/// Makes a CA and, signed by it, a certificate for every host (its fabric address and
/// [`agent_dns`]), the controller and the master (the controller's address). What exists is
/// kept, so agents already running keep trusting each other; the CA's key is never
/// written: a new party means a new lab.
pub fn ensure(dir: &Path, hosts: &[(&str, IpAddr)], controller: IpAddr) -> Result<()> {
    let mut parties: Vec<(String, Vec<String>)> = hosts
        .iter()
        .map(|(h, ip)| (h.to_string(), vec![ip.to_string(), agent_dns(h)]))
        .collect();
    parties.push((CONTROLLER.into(), vec![format!("{CONTROLLER}.corehop")]));
    parties.push((
        MASTER.into(),
        vec![controller.to_string(), format!("{MASTER}.corehop")],
    ));
    let complete = files_in(dir, CONTROLLER).ca.exists()
        && parties.iter().all(|(who, _)| {
            let f = files_in(dir, who);
            f.cert.exists() && f.key.exists()
        });
    if complete {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "corehop lab CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    for (who, names) in &parties {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(names.clone())?;
        p.distinguished_name.push(DnType::CommonName, who.as_str());
        let cert = p.signed_by(&key, &issuer)?;
        let f = files_in(dir, who);
        crate::write_private(&f.key, key.serialize_pem().as_bytes())?;
        std::fs::write(&f.cert, cert.pem())?;
    }
    std::fs::write(dir.join("ca.pem"), ca_cert.pem())
        .with_context(|| format!("cannot write the lab CA into {}", dir.display()))
}
