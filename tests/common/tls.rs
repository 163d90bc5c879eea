//! TLS for tests: a test CA and leaf certificates for given names (rcgen,
//! ECDSA P-256, valid 1975-4096), written as PEM files that openssl
//! s_server or nginx can load; a rustls client (ring provider) that trusts
//! only that CA, sends SNI and verifies the server's name; and
//! [`OpensslServer`], `openssl s_server` started by the test on a held port
//! and stopped by PID.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{PATIENCE, require_uring};

/// A certificate authority that exists only for one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate signed by a [`TestCa`], with its private key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

/// Where [`Leaf::write`] put the PEM files.
pub struct PemFiles {
    /// The leaf certificate alone.
    pub cert: PathBuf,
    /// Its PKCS#8 private key.
    pub key: PathBuf,
    /// The CA certificate (the trust anchor for clients).
    pub ca: PathBuf,
}

impl TestCa {
    /// A CA whose subject's common name is `name`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for the DNS names `names` (its subject
    /// alternative names; the first is also its common name), signed by
    /// this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf names");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A client configuration that trusts this CA and nothing else.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).expect("add the CA");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Leaf {
    /// Write `<name>.pem`, `<name>.key` and `<name>-ca.pem` (the CA of
    /// `ca`) into `dir`.
    pub fn write(&self, ca: &TestCa, dir: &Path, name: &str) -> PemFiles {
        let files = PemFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(format!("{name}-ca.pem")),
        };
        std::fs::write(&files.cert, &self.cert_pem).expect("write cert");
        std::fs::write(&files.key, &self.key_pem).expect("write key");
        std::fs::write(&files.ca, ca.pem()).expect("write CA");
        files
    }
}

/// A TLS connection over TCP.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// Connect to 127.0.0.1:`port`, send `sni`, and complete the handshake,
/// verifying the server's certificate against `config`'s roots and `sni`.
/// A verification failure is an `InvalidData` error wrapping rustls's.
pub fn connect(port: u16, sni: &str, config: &Arc<ClientConfig>) -> io::Result<TlsStream> {
    let name = ServerName::try_from(sni.to_owned())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = ClientConnection::new(Arc::clone(config), name).map_err(io::Error::other)?;
    let tcp = super::connect(port);
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// The rustls error inside an error from [`connect`], if there is one.
pub fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// `openssl s_server -rev` (each line comes back reversed) on a held port,
/// killed by PID on drop.
pub struct OpensslServer {
    pub port: u16,
    child: Child,
}

impl OpensslServer {
    /// Serve `default` and, to clients whose SNI is `sni`, `by_sni`
    /// (`-servername`/`-cert2`): the certificate a client gets tells which
    /// SNI reached the server. `port` is held with SO_REUSEADDR
    /// ([`super::Ports::admin`]), as s_server binds. `None` (after a loud
    /// message) without an `openssl` binary, unless RINGWAY_REQUIRE_URING=1
    /// (CI), where that fails the test.
    pub fn start(
        port: u16,
        default: &PemFiles,
        sni: &str,
        by_sni: &PemFiles,
    ) -> Option<OpensslServer> {
        let mut cmd = Command::new("openssl");
        cmd.arg("s_server")
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&default.cert)
            .arg("-key")
            .arg(&default.key)
            .args(["-servername", sni])
            .arg("-cert2")
            .arg(&by_sni.cert)
            .arg("-key2")
            .arg(&by_sni.key)
            .arg("-rev")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let why = format!("cannot run openssl s_server: {e}");
                assert!(!require_uring(), "{why}");
                eprintln!("SKIPPED: {why}; set RINGWAY_REQUIRE_URING=1 to fail instead");
                return None;
            }
        };
        // It prints ACCEPT once it listens.
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ACCEPT" {
                    let _ = tx.send(());
                }
            }
        });
        let server = OpensslServer { port, child };
        rx.recv_timeout(PATIENCE)
            .expect("openssl s_server did not print ACCEPT");
        Some(server)
    }
}

impl Drop for OpensslServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line over `tls` and the line that comes back.
pub fn chat(tls: &mut TlsStream, line: &str) -> io::Result<String> {
    tls.write_all(format!("{line}\n").as_bytes())?;
    tls.flush()?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while reply.last() != Some(&b'\n') {
        if tls.read(&mut byte)? == 0 {
            break;
        }
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}
