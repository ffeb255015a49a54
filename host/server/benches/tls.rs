//! SIP over TLS against a real `wasmpbx run`: what a handshake costs the host, how many
//! phones register over TLS a second (a connection each, digest challenge and answer), and
//! what the host holds for DEVICES idle registered TLS phones (RSS, open files). The
//! phones are rustls clients in this process, on the same machine.
//!
//!     cargo bench -p wasmpbx --bench tls          (DEVICES=10000 CONCURRENCY=50)
#![allow(clippy::disallowed_methods)] // a benchmark is an I/O edge: it reads the wall clock

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use wasmpbx::sip::digest::Challenge;

const HANDSHAKES: usize = 2_000;
const REALM: &str = "pbx.test";
const PASSWORD: &str = "bench-secret";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let devices = env_or("DEVICES", 10_000);
    let concurrency = env_or("CONCURRENCY", 50);
    let dir = tempfile::tempdir().unwrap();

    // A CA of the bench's own and the host's certificate.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &*ca)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("sip.pem"), dir.path().join("sip.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let mut users = String::new();
    for i in 0..devices {
        users.push_str(&format!(
            "[[users]]\nid = \"u{i}\"\nextension = \"{}\"\npassword = \"{PASSWORD}\"\n",
            100_000 + i
        ));
    }
    let config = dir.path().join("wasmpbx.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = [\"udp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\ndomain = \"{REALM}\"\n\
             tls_cert = {cert_path:?}\ntls_key = {key_path:?}\n[http]\nlisten = \"127.0.0.1:0\"\n\
             [scripts]\ndir = {:?}\n[store]\npath = {:?}\n{users}",
            dir.path().join("scripts"),
            dir.path().join("bench.db"),
        ),
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_wasmpbx"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wasmpbx");
    let pid = server.id();
    let mut banner = BufReader::new(server.stdout.take().unwrap()).lines();
    let tls: SocketAddr = banner
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.trim().strip_prefix("SIP       tls:")?.parse().ok())
        .expect("a tls: listener in the banner");
    std::thread::spawn(move || banner.for_each(drop));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(client));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    println!(
        "Machine: {} cores, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let idle = Process(pid).sample();

    // Handshakes alone: connect, handshake, close.
    let (latencies, elapsed, host_cpu) = measured(pid, || {
        runtime.block_on(in_parallel(HANDSHAKES, concurrency, |_| {
            let connector = connector.clone();
            async move {
                let t = Instant::now();
                connect(&connector, tls).await;
                t.elapsed()
            }
        }))
    });
    println!(
        "TLS handshakes: {HANDSHAKES} in {:.2} s = {:.0}/s; handshake p50 {:.2} ms p99 {:.2} ms; host CPU {:.3} ms each",
        elapsed.as_secs_f64(),
        HANDSHAKES as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        host_cpu * 1e3 / HANDSHAKES as f64,
    );

    // Registrations: a connection each, kept open.
    let (phones, elapsed, host_cpu) = measured(pid, || {
        runtime.block_on(in_parallel(devices, concurrency, |i| {
            let connector = connector.clone();
            async move {
                let t = Instant::now();
                let mut phone = connect(&connector, tls).await;
                let ok = register(&mut phone, 100_000 + i).await;
                (phone, ok, t.elapsed())
            }
        }))
    });
    let registered = phones.iter().filter(|(_, ok, _)| *ok).count();
    let latencies: Vec<Duration> = phones.iter().map(|(_, _, t)| *t).collect();
    println!(
        "TLS registrations: {registered} of {devices} in {:.2} s = {:.0}/s (connect + handshake + 401 + 200); p50 {:.2} ms p99 {:.2} ms; host CPU {:.3} ms each",
        elapsed.as_secs_f64(),
        registered as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        host_cpu * 1e3 / devices as f64,
    );

    // Held idle: what the host keeps for them.
    std::thread::sleep(Duration::from_secs(2));
    let held = Process(pid).sample();
    println!(
        "Idle: before {:.1} MiB RSS, {} files; with {registered} registered TLS phones {:.1} MiB RSS ({:.1} KiB a phone), {} files",
        idle.rss_kib as f64 / 1024.0,
        idle.fds,
        held.rss_kib as f64 / 1024.0,
        (held.rss_kib - idle.rss_kib) as f64 / registered.max(1) as f64,
        held.fds,
    );
    drop(phones);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(registered, devices, "every phone registered");
}

/// Run a phase of the bench: its result, how long it took and the host's CPU seconds.
fn measured<T>(pid: u32, phase: impl FnOnce() -> T) -> (T, Duration, f64) {
    let cpu = Process(pid).cpu_seconds();
    let started = Instant::now();
    let result = phase();
    (result, started.elapsed(), Process(pid).cpu_seconds() - cpu)
}

/// `count` tasks made by `task(i)`, at most `concurrency` at a time; their results in order.
async fn in_parallel<T, F, Fut>(count: usize, concurrency: usize, task: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut handles = Vec::with_capacity(count);
    for i in 0..count {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let future = task(i);
        handles.push(tokio::spawn(async move {
            let out = future.await;
            drop(permit);
            out
        }));
    }
    let mut out = Vec::with_capacity(count);
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

async fn connect(connector: &TlsConnector, addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

/// REGISTER `extension` on `phone`, answering the challenge: whether it got 200.
async fn register(phone: &mut TlsStream<TcpStream>, extension: usize) -> bool {
    let local = phone.get_ref().0.local_addr().unwrap();
    let uri = format!("sip:{REALM}");
    let request = |cseq: u32, auth: &str| {
        format!(
            "REGISTER {uri} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-b{extension}-{cseq}\r\n\
Max-Forwards: 70\r\nFrom: <sip:{extension}@{REALM}>;tag=b{extension}\r\nTo: <sip:{extension}@{REALM}>\r\n\
Call-ID: bench-{extension}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{extension}@{local};transport=tls>\r\n\
Expires: 3600\r\nUser-Agent: tls-bench\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    phone.write_all(request(1, "").as_bytes()).await.unwrap();
    let challenge = response(phone).await;
    let Some(Ok(challenge)) = challenge
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .map(Challenge::parse)
    else {
        return false;
    };
    let answer = challenge.answer(
        &extension.to_string(),
        PASSWORD,
        "REGISTER",
        &uri,
        "benchcn",
        1,
    );
    let auth = format!("Authorization: {answer}\r\n");
    phone.write_all(request(2, &auth).as_bytes()).await.unwrap();
    response(phone).await.starts_with("SIP/2.0 200")
}

/// One response (the host's answers to REGISTER have no body).
async fn response(phone: &mut TlsStream<TcpStream>) -> String {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), phone.read(&mut chunk))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "the host closed the connection");
        buffer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buffer).into_owned()
}

fn percentile(samples: &[Duration], p: f64) -> f64 {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    ms[((ms.len() as f64 - 1.0) * p).round() as usize]
}

/// The host's process, read from /proc.
struct Process(u32);

struct Sample {
    rss_kib: i64,
    fds: usize,
}

impl Process {
    fn sample(&self) -> Sample {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0)).unwrap();
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.0))
            .map(|d| d.count())
            .unwrap_or(0);
        Sample { rss_kib, fds }
    }

    /// User + system CPU time so far (clock ticks of 10 ms).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).unwrap();
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }
}
