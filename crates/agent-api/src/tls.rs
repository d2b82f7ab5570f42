//! Agent connections are mutual TLS 1.3 (rustls): every party proves it holds a
//! certificate of the lab's CA, and images, requests and answers cross the fabric sealed.
//! Images are also signed by the agent that dumped them, so the destination knows which
//! host's dump it restores, and a controller (whose certificate names no host) cannot feed one.
use anyhow::{bail, Context, Result};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::SigningKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls::{SignatureScheme, StreamOwned};
use serde::{Deserialize, Serialize};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub type ClientStream = StreamOwned<ClientConnection, TcpStream>;
pub type ServerStream = StreamOwned<ServerConnection, TcpStream>;

/// A handshake that has not finished by then is dropped (a silent or junk caller).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// One party's keys, ready to connect and to serve.
#[derive(Clone)]
pub struct Credentials {
    /// Where they were read from, for QEMU, which reads its own (crate vm's `StreamTls`).
    files: lab::pki::Files,
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    key: Arc<dyn SigningKey>,
}

fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    // AES-128-GCM first: the cheapest suite with AES-NI, and images cross inside the
    // frozen window.
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    })
}

impl Credentials {
    pub fn load(f: &lab::pki::Files) -> Result<Self> {
        let read = |what: &str, p: &std::path::Path| {
            std::fs::read(p).with_context(|| format!("cannot read the {what} {}", p.display()))
        };
        let ca = read("CA certificate", &f.ca)?;
        let chain = read("certificate", &f.cert)?;
        let key = read("private key", &f.key)?;
        let ca: Vec<_> = CertificateDer::pem_slice_iter(&ca)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} is not a PEM certificate", f.ca.display()))?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain)
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} is not a PEM certificate", f.cert.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&key)
            .with_context(|| format!("{} is not a PEM private key", f.key.display()))?;
        if chain.is_empty() {
            bail!("{} holds no certificate", f.cert.display());
        }
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c).context("unusable CA certificate")?;
        }
        let roots = Arc::new(roots);
        let p = provider();
        let signer = p
            .key_provider
            .load_private_key(key.clone_key())
            .context("unsupported private key")?;
        let client = ClientConfig::builder_with_provider(p.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .context("the certificate does not match the key")?;
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, p.clone())
                .build()?;
        let server = ServerConfig::builder_with_provider(p)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .context("the certificate does not match the key")?;
        Ok(Credentials {
            files: f.clone(),
            client: Arc::new(client),
            server: Arc::new(server),
            key: signer,
        })
    }

    pub fn files(&self) -> &lab::pki::Files {
        &self.files
    }

    /// `who`'s keys in the lab's folder (a host's name, the controller or the master).
    pub fn of_lab(who: &str) -> Result<Self> {
        Self::load(&lab::pki::files_in(&lab::pki::dir(), who)).with_context(|| {
            format!("no keys for {who:?}: is the lab up (`corehop lab up` makes them)?")
        })
    }

    /// The controller's keys, as every `corehop` command but the daemons uses them.
    pub fn controller() -> Result<Self> {
        Self::of_lab(lab::pki::CONTROLLER)
    }

    /// Client side: the agent at `addr` must hold a certificate for that address.
    pub fn connect(&self, tcp: TcpStream, addr: SocketAddr) -> Result<ClientStream> {
        let conn = ClientConnection::new(self.client.clone(), ServerName::from(addr.ip()))?;
        handshake(StreamOwned::new(conn, tcp))
    }

    /// Server side: the caller must hold a certificate of the lab's CA.
    pub fn accept(&self, tcp: TcpStream) -> Result<ServerStream> {
        handshake(StreamOwned::new(self.server_connection()?, tcp))
    }

    /// A server end with no transport yet (what [`Credentials::accept`] drives).
    pub fn server_connection(&self) -> Result<ServerConnection> {
        Ok(ServerConnection::new(self.server.clone())?)
    }

    pub fn sign(&self, msg: &[u8]) -> Result<Signature> {
        let Some(signer) = self.key.choose_scheme(SCHEMES) else {
            bail!("the private key suits no signature scheme corehop knows");
        };
        Ok(Signature {
            scheme: signer.scheme().into(),
            bytes: hex::encode(signer.sign(msg)?),
        })
    }
}

fn handshake<C, D>(mut s: StreamOwned<C, TcpStream>) -> Result<StreamOwned<C, TcpStream>>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
{
    let old = s.sock.read_timeout()?;
    // One deadline for the whole handshake: a caller trickling bytes cannot stretch it.
    let deadline = std::time::Instant::now() + HANDSHAKE_TIMEOUT;
    while s.conn.is_handshaking() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            bail!("TLS handshake failed: not done within {HANDSHAKE_TIMEOUT:?}");
        }
        s.sock.set_read_timeout(Some(left))?;
        s.conn
            .complete_io(&mut s.sock)
            .context("TLS handshake failed")?;
    }
    s.sock.set_read_timeout(old)?;
    Ok(s)
}

/// Schemes we sign with, strongest first among those a key may suit.
const SCHEMES: &[SignatureScheme] = &[
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
];

/// A signature by one party's key, checked against its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// TLS SignatureScheme code point.
    pub scheme: u16,
    pub bytes: String,
}

/// The verified certificate of the party at the other end of a connection.
pub fn peer(conn: &rustls::ServerConnection) -> Result<CertificateDer<'static>> {
    conn.peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned())
        .context("the caller presented no certificate")
}

/// Checks that `cert` (already verified against the CA by the handshake) belongs to agent
/// `host`, and that `sig` over `msg` was made with its key.
pub fn verify_agent(
    cert: &CertificateDer<'_>,
    host: &str,
    msg: &[u8],
    sig: &Signature,
) -> Result<()> {
    let ee = webpki::EndEntityCert::try_from(cert).context("unreadable peer certificate")?;
    let name = ServerName::try_from(lab::pki::agent_dns(host))
        .with_context(|| format!("{host:?} is not a host name"))?;
    ee.verify_is_valid_for_subject_name(&name)
        .map_err(|_| anyhow::anyhow!("the sender's certificate is not agent {host:?}'s"))?;
    let bytes = hex::decode(&sig.bytes).context("signature is not hex")?;
    let scheme = SignatureScheme::from(sig.scheme);
    // Made once: a destination checks a signature per image round, in the frozen window.
    static ALGS: std::sync::OnceLock<rustls::crypto::WebPkiSupportedAlgorithms> =
        std::sync::OnceLock::new();
    let algs = ALGS
        .get_or_init(|| provider().signature_verification_algorithms)
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .map(|(_, algs)| *algs)
        .with_context(|| format!("unknown signature scheme {scheme:?}"))?;
    if algs
        .iter()
        .any(|alg| ee.verify_signature(*alg, msg, &bytes).is_ok())
    {
        Ok(())
    } else {
        bail!("bad signature from agent {host:?}")
    }
}

#[cfg(test)]
mod tests;
