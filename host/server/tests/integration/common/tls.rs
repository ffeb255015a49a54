//! TLS for the tests: a CA of their own, server certificates it signs, and a SIP client
//! over TLS (rustls) that frames what it reads by Content-Length.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls;

/// A certificate authority that exists for one test.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Self {
            issuer: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Write the CA's certificate to `dir/name`; its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// A server certificate for `names` (IP addresses or host names), written to
    /// `dir/{stem}.pem` and `dir/{stem}.key`; their paths.
    pub fn issue(&self, names: &[&str], dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.issuer).unwrap();
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }
}

/// A test CA and a certificate for 127.0.0.1 it issued, in a folder of their own.
pub struct Certs {
    pub dir: tempfile::TempDir,
    pub ca: TestCa,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("wasmpbx test CA");
        let (cert, key) = ca.issue(&["127.0.0.1"], dir.path(), "sip");
        Certs { dir, ca, cert, key }
    }

    /// The CA's certificate as a PEM file, for clients that read one.
    pub fn ca_file(&self) -> PathBuf {
        self.ca.write(self.dir.path(), "ca.pem")
    }
}

/// A SIP client on one TLS connection.
pub struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buffer: Vec<u8>,
}

impl TlsClient {
    /// Connect to `addr`, trusting `ca_pem`, checking the certificate names `name`.
    pub fn connect(addr: SocketAddr, ca_pem: &str, name: &str) -> Result<Self, String> {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name)
            .unwrap()
            .to_owned();
        let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut stream = rustls::StreamOwned::new(connection, tcp);
        // Drive the handshake to its end now, so a failure shows here.
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| e.to_string())?;
        }
        // Then short reads, so a test can poll.
        stream
            .sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Ok(Self {
            stream,
            buffer: Vec::new(),
        })
    }

    /// The certificate the server presented (DER).
    pub fn server_certificate(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// The local address of the connection (what the server sees as its peer).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.sock.local_addr().unwrap()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Whatever arrives within `limit` (raw, unframed), or what was buffered.
    pub fn read_raw(&mut self, limit: Duration) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        while self.buffer.is_empty() && Instant::now() < deadline && self.fill() {}
        std::mem::take(&mut self.buffer)
    }

    /// The next whole SIP message within `limit`.
    pub fn read_message(&mut self, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buffer[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.trim()
                            .eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if self.buffer.len() >= end + 4 + length {
                    let message: Vec<u8> = self.buffer.drain(..end + 4 + length).collect();
                    return Some(String::from_utf8_lossy(&message).into_owned());
                }
            }
            if Instant::now() > deadline || !self.fill() {
                return None;
            }
        }
    }

    /// Read what is there (waiting up to the socket's 200 ms timeout); false once closed.
    pub fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                true
            }
            Err(_) => false,
        }
    }

    /// REGISTER `extension` over this connection (answering the digest challenge); the
    /// final response.
    pub fn register(&mut self, extension: &str, password: &str, realm: &str) -> String {
        let local = self.local_addr();
        let uri = format!("sip:{realm}");
        let request = |cseq: u32, auth: &str| {
            format!(
                "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-reg-{cseq}\r\n\
Max-Forwards: 70\r\nFrom: <sip:{extension}@{realm}>;tag=tls-reg\r\nTo: <sip:{extension}@{realm}>\r\n\
Call-ID: tls-reg-{extension}-{}\r\nCSeq: {cseq} REGISTER\r\n\
Contact: <sip:{extension}@{local};transport=tls>\r\nExpires: 600\r\nUser-Agent: tls-test\r\n{auth}Content-Length: 0\r\n\r\n",
                local.port()
            )
        };
        self.send(request(1, "").as_bytes());
        let challenge = self
            .read_message(Duration::from_secs(5))
            .expect("an answer to REGISTER");
        assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
        let auth = format!(
            "Authorization: {}\r\n",
            answer_challenge(&challenge, "WWW-Authenticate", extension, password, &uri)
        );
        self.send(request(2, &auth).as_bytes());
        self.read_message(Duration::from_secs(5))
            .expect("an answer to the authenticated REGISTER")
    }
}

/// The answer to the digest challenge in `response` (its `header`), for a REGISTER to
/// `uri`: as a phone would compute it, by the host's own client code.
pub fn answer_challenge(
    response: &str,
    header: &str,
    user: &str,
    password: &str,
    uri: &str,
) -> String {
    let value = response
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{header}: ")))
        .unwrap_or_else(|| panic!("no {header} in {response}"));
    wasmpbx::sip::digest::Challenge::parse(value)
        .unwrap()
        .answer(user, password, "REGISTER", uri, "tlscn", 1)
}
