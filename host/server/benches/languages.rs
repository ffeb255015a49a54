//! The front-door in each language, side by side: component size, compile on load,
//! cold start from the on-disk cache, reload of a one-line change (with Cranelift's
//! incremental cache warm from the previous version), decision latency with a fresh
//! instance per event, and linear memory per instance.
//!
//!     tests/run.sh builds the examples; then
//!     cargo bench -p wasmpbx --bench languages
//!
//! The one-line change is `target/examples/<language>/front-door-changed.wasm`, built by
//! `tests/bench/languages.sh` (which runs this bench); languages without it skip that
//! column.
// Measuring happens on real time here.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{incoming_call, ms, percentile, script_host, us};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmpbx::routing::Event;

/// Load `path` into a fresh engine; the time it took.
fn load(cache: Option<&Path>, path: &Path) -> Duration {
    let host = script_host(cache);
    let bytes = std::fs::read(path).unwrap();
    let started = Instant::now();
    host.engine
        .load("front-door", &bytes, &host.services)
        .unwrap();
    started.elapsed()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/examples");
    common::print_machine();
    println!();
    println!(
        "| front-door in | size | compile on load | cold start, disk cache | one-line change, incremental | decision p50 | p99 | decisions/s (1 core) | memory per instance |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let languages: [(&str, PathBuf); 4] = [
        ("Rust", PathBuf::from(test_components::FRONT_DOOR)),
        ("C", examples.join("c/front-door.wasm")),
        ("JavaScript", examples.join("javascript/front-door.wasm")),
        ("Python", examples.join("python/front-door.wasm")),
    ];
    for (language, path) in languages {
        if !path.is_file() {
            println!("| {language} | not built ({}) |", path.display());
            continue;
        }
        let size = std::fs::metadata(&path).unwrap().len();
        let compile = load(None, &path);
        let cache = tempfile::tempdir().unwrap();
        load(Some(cache.path()), &path);
        let cold = load(Some(cache.path()), &path);
        let changed = path.with_file_name("front-door-changed.wasm");
        let reload = if changed.is_file() {
            ms(load(Some(cache.path()), &changed))
        } else {
            "–".into()
        };

        let host = script_host(Some(cache.path()));
        let script = host
            .engine
            .load("front-door", &std::fs::read(&path).unwrap(), &host.services)
            .unwrap();
        host.registry.install(script);
        let location = host.services.config.load().location("sydney").cloned();
        let call = incoming_call();
        let route = || {
            host.route(
                "front-door",
                None,
                location.as_ref(),
                &call,
                &Event::Incoming,
            )
            .0
        };
        // About two seconds of decisions, whatever the language's speed.
        let warm_up = Instant::now();
        let mut n = 0;
        while warm_up.elapsed() < Duration::from_millis(300) {
            assert!(route().fallback.is_none());
            n += 1;
        }
        let n = (n * 7).clamp(500, 50_000);
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
        let memory = host.registry.get("front-door").unwrap().peak_memory_bytes();
        println!(
            "| {language} | {:.2} MB | {} | {} | {reload} | {} | {} | {:.0} | {:.2} MiB |",
            size as f64 / 1e6,
            ms(compile),
            ms(cold),
            us(percentile(&samples, 0.5)),
            us(percentile(&samples, 0.99)),
            n as f64 / total.as_secs_f64(),
            memory as f64 / (1 << 20) as f64
        );
    }
}
