//! Script runtime figures for BENCHMARKS.md:
//! decision latency (fresh instance per event), cold start with and without the disk
//! cache, reload latency (rename into place → first decision by the new version), and
//! decision throughput while scripts reload.
//!
//!     cargo bench -p wasmpbx --bench scripts
//!
//! A plain harness, not criterion: the issue asks for percentiles of single decisions
//! and for end-to-end reload timings, which criterion does not report.
// Measuring and waiting happen on real time here.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{incoming_call, ms, percentile, script_host, us};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use wasmpbx::routing::Event;
use wasmpbx::script::watcher::{self, LoadOutcome};

/// The component with a custom section appended: same behaviour, new bytes, so the
/// host (and the disk cache) must compile it afresh.
fn unique_bytes(component: &[u8], n: u32) -> Vec<u8> {
    let name = b"wasmpbx-bench";
    let payload_len = 1 + name.len() + 4;
    let mut bytes = component.to_vec();
    bytes.push(0); // custom section id
    bytes.push(payload_len as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&n.to_le_bytes());
    bytes
}

fn decision_latency(name: &str, path: &str) {
    let host = script_host(None);
    let script = host
        .engine
        .load("router", &std::fs::read(path).unwrap(), &host.services)
        .unwrap();
    host.registry.install(script);
    let location = host.services.config.load().location("sydney").cloned();
    let call = incoming_call();
    let route = || {
        host.route("router", None, location.as_ref(), &call, &Event::Incoming)
            .0
    };
    for _ in 0..2_000 {
        assert!(route().fallback.is_none());
    }
    let n = 20_000;
    let mut samples = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let decision = route();
        samples.push(t.elapsed());
        assert!(decision.fallback.is_none());
    }
    let total = started.elapsed();
    samples.sort();
    println!(
        "| {name} incoming event | {} | {} | {} | {} | {:.0} |",
        us(percentile(&samples, 0.5)),
        us(percentile(&samples, 0.9)),
        us(percentile(&samples, 0.99)),
        us(*samples.last().unwrap()),
        n as f64 / total.as_secs_f64()
    );
}

fn cold_start() {
    let dir = tempfile::tempdir().unwrap();
    for (name, path) in [
        ("listen", test_components::LISTEN),
        ("front-door", test_components::FRONT_DOOR),
        ("flip-policy", test_components::FLIP_POLICY),
    ] {
        std::fs::copy(path, dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    let cache = tempfile::tempdir().unwrap();
    let time = |cache: Option<&Path>| {
        let t = Instant::now();
        let host = script_host(cache);
        host.load_dir(dir.path()).unwrap();
        assert_eq!(
            host.registry
                .status()
                .iter()
                .filter(|s| s.hash.is_some())
                .count(),
            3
        );
        (t.elapsed(), host.engine.cache_hits())
    };
    let (no_cache, _) = time(None);
    let (cold_cache, _) = time(Some(cache.path()));
    let (warm_cache, hits) = time(Some(cache.path()));
    assert_eq!(hits, 3);
    println!("| no disk cache | {} |", ms(no_cache));
    println!(
        "| empty disk cache (compile + store) | {} |",
        ms(cold_cache)
    );
    println!("| warm disk cache (restart) | {} |", ms(warm_cache));
}

/// Reload latency and throughput under reloads, through the real watcher.
fn reloads() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.wasm");
    let listen = std::fs::read(test_components::LISTEN).unwrap();
    let front_door = std::fs::read(test_components::FRONT_DOOR).unwrap();
    std::fs::write(&path, &listen).unwrap();
    let host = Arc::new(script_host(Some(cache.path())));
    host.load_dir(dir.path()).unwrap();
    let (tx, mut outcomes) = tokio::sync::mpsc::unbounded_channel();
    let (_shutdown, shutdown_rx) = tokio::sync::watch::channel(false);
    runtime.spawn(watcher::watch(
        host.clone(),
        dir.path().to_owned(),
        Some(tx),
        shutdown_rx,
    ));
    std::thread::sleep(Duration::from_millis(200));

    // A worker on the other core routes calls without pause the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let (decisions, fallbacks) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let worker = {
        let (host, stop, decisions, fallbacks) = (
            host.clone(),
            stop.clone(),
            decisions.clone(),
            fallbacks.clone(),
        );
        std::thread::spawn(move || {
            let location = host.services.config.load().location("sydney").cloned();
            let call = incoming_call();
            while !stop.load(Relaxed) {
                let (decision, _) =
                    host.route("router", None, location.as_ref(), &call, &Event::Incoming);
                decisions.fetch_add(1, Relaxed);
                if decision.fallback.is_some() {
                    fallbacks.fetch_add(1, Relaxed);
                }
            }
        })
    };

    let mut reload = |bytes: &[u8]| -> Duration {
        let expected = wasmpbx::script::engine::content_hash(bytes);
        let temp = dir.path().join("router.wasm.tmp");
        std::fs::write(&temp, bytes).unwrap();
        let t = Instant::now();
        std::fs::rename(&temp, &path).unwrap();
        let location = host.services.config.load().location("sydney").cloned();
        loop {
            let (decision, _) = host.route(
                "router",
                None,
                location.as_ref(),
                &incoming_call(),
                &Event::Incoming,
            );
            if decision.script.as_ref().is_some_and(|s| s.hash == expected) {
                let elapsed = t.elapsed();
                while let Ok(outcome) = outcomes.try_recv() {
                    assert!(matches!(outcome, LoadOutcome::Loaded { .. }), "{outcome:?}");
                }
                return elapsed;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    };
    let started = Instant::now();
    let mut compiled = Vec::new();
    for n in 0..20 {
        let base = if n % 2 == 0 { &front_door } else { &listen };
        compiled.push(reload(&unique_bytes(base, n)));
    }
    // Versions seen before: the disk cache has them.
    let mut cached = Vec::new();
    for n in 0..10 {
        let base = if n % 2 == 0 { &front_door } else { &listen };
        cached.push(reload(&unique_bytes(base, n)));
    }
    let elapsed = started.elapsed();
    stop.store(true, Relaxed);
    worker.join().unwrap();
    compiled.sort();
    cached.sort();
    println!(
        "| new bytes (compile) | 20 | {} | {} |",
        ms(percentile(&compiled, 0.5)),
        ms(*compiled.last().unwrap())
    );
    println!(
        "| bytes in the disk cache | 10 | {} | {} |",
        ms(percentile(&cached, 0.5)),
        ms(*cached.last().unwrap())
    );
    println!();
    println!(
        "Throughput while 30 reloads happened ({:.1} s): {} decisions ({:.0}/s on one worker thread), {} fallbacks.",
        elapsed.as_secs_f64(),
        decisions.load(Relaxed),
        decisions.load(Relaxed) as f64 / elapsed.as_secs_f64(),
        fallbacks.load(Relaxed)
    );
    assert_eq!(fallbacks.load(Relaxed), 0, "a reload caused a fallback");
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing: run quickly then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    common::print_machine();
    println!();
    println!("| decision (fresh instance) | p50 | p90 | p99 | max | decisions/s (1 thread) |");
    println!("|---|---|---|---|---|---|");
    decision_latency("listen", test_components::LISTEN);
    decision_latency("front-door", test_components::FRONT_DOOR);
    println!();
    println!("| cold start: load listen + front-door + flip-policy | time |");
    println!("|---|---|");
    cold_start();
    println!();
    println!(
        "| reload: rename into place → first decision by the new version | reloads | p50 | max |"
    );
    println!("|---|---|---|---|");
    reloads();
}
