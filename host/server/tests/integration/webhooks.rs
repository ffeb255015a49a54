//! Webhooks against a receiver written here (a small HTTP server on loopback): signed
//! deliveries of the events it wants, in order, and a retry after a 500.
// A test is an I/O edge: it waits on real time.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};

use crate::common::callers::{FLIP, listen_location};
use crate::common::server::{Server, SippServer, sipp};

/// One request the receiver got: its headers (lower-cased names) and body.
struct Delivery {
    headers: Vec<(String, String)>,
    body: String,
    /// When it was read.
    at: Instant,
}

impl Delivery {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// An HTTP/1.1 server on loopback answering `statuses` in turn (then 200), keeping
/// connections open; every request it read goes to the channel.
fn receiver(statuses: Vec<u16>) -> (u16, mpsc::Receiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(statuses.into_iter()));
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let (tx, statuses) = (tx.clone(), statuses.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut headers = Vec::new();
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap();
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        let (name, value) = header.split_once(':').unwrap();
                        headers.push((name.to_lowercase(), value.trim().to_owned()));
                    }
                    let length: usize = headers
                        .iter()
                        .find(|(n, _)| n == "content-length")
                        .map_or(0, |(_, v)| v.parse().unwrap());
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let status = statuses.lock().unwrap().next().unwrap_or(200);
                    let _ = tx.send(Delivery {
                        headers,
                        body: String::from_utf8(body).unwrap(),
                        at: Instant::now(),
                    });
                    // A body, as real endpoints answer.
                    let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n\r\nok");
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

/// A server forwarding trunk calls to a SIPp return side on `return_port` (`listen`),
/// with one webhook (`webhook`: its TOML keys).
fn listen_with_webhook(return_port: u16, webhook: &str) -> Server {
    Server::start_with_scripts(
        &format!("{}\n[[webhooks]]\n{webhook}", listen_location(return_port)),
        &[("listen", test_components::LISTEN)],
    )
}

/// A call from the trunk to the `listen` location, `calls` times at 10 a second.
fn call_listen(server: &Server, calls: &str) -> i32 {
    sipp(
        server.udp,
        "trunk_caller.xml",
        "",
        &["-i", "127.0.0.2", "-s", FLIP, "-m", calls, "-r", "10"],
    )
}

fn next(rx: &mpsc::Receiver<Delivery>, limit: Duration) -> Delivery {
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("no delivery within {limit:?}"))
}

#[test]
fn a_webhook_gets_signed_events_it_wants_in_order_and_a_refused_one_again() {
    // The first delivery is refused with a 500: it comes again about a second later.
    let (port, deliveries) = receiver(vec![500]);
    let ret = SippServer::start("return_number.xml", &["-m", "1"]);
    let server = listen_with_webhook(
        ret.port,
        &format!(
            "url = \"http://127.0.0.1:{port}/hooks/wasmpbx?from=test\"\nevents = [\"call.started\", \"call.ended\"]\nsecret = \"hook-s3cret\"\n"
        ),
    );
    assert_eq!(call_listen(&server, "1"), 0);
    assert_eq!(ret.wait(Duration::from_secs(15)), 0);

    let refused = next(&deliveries, Duration::from_secs(10));
    let again = next(&deliveries, Duration::from_secs(10));
    let ended = next(&deliveries, Duration::from_secs(10));
    let backoff = again.at - refused.at;
    assert!(
        backoff >= Duration::from_millis(800),
        "the retry waited for its backoff: {backoff:?}"
    );
    assert_eq!(refused.header("x-wasmpbx-event"), "call.started");
    assert_eq!(again.body, refused.body, "the same event again");
    assert_eq!(
        again.header("x-wasmpbx-delivery"),
        refused.header("x-wasmpbx-delivery"),
        "with the same delivery id, so the receiver can drop repeats"
    );
    assert_eq!(
        ended.json()["type"],
        "call.ended",
        "call.answered was not asked for"
    );
    assert_eq!(ended.json()["session"], again.json()["session"]);
    assert_eq!(ended.json()["disposition"], "answered");

    // Each delivery is signed: HMAC-SHA256 of "timestamp.body" under the secret.
    for delivery in [&again, &ended] {
        assert_eq!(delivery.header("content-type"), "application/json");
        let timestamp = delivery.header("x-wasmpbx-timestamp");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"hook-s3cret").unwrap();
        mac.update(format!("{timestamp}.{}", delivery.body).as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            delivery.header("x-wasmpbx-signature"),
            format!("sha256={hex}")
        );
    }
    assert!(
        deliveries.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing else was wanted"
    );
    let (_, metrics) = crate::common::server::http(server.http, "GET", "/metrics", None, "");
    let series = format!("{{webhook=\"http://127.0.0.1:{port}\"}}");
    for (name, value) in [("delivered", 2), ("retries", 1), ("failed", 0)] {
        let line = format!("wasmpbx_webhook_{name}_total{series} {value}\n");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
}

#[test]
fn a_webhook_that_never_answers_delays_no_call() {
    // A receiver that accepts connections and never answers; every call still completes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(64).collect();
        std::thread::sleep(Duration::from_secs(120));
        drop(held);
    });
    let ret = SippServer::start("return_number.xml", &["-m", "20"]);
    let server = listen_with_webhook(ret.port, &format!("url = \"http://127.0.0.1:{port}/\"\n"));
    assert_eq!(call_listen(&server, "20"), 0, "every call completed");
    assert_eq!(ret.wait(Duration::from_secs(30)), 0);
    assert_eq!(server.cdrs().len(), 20);
}
