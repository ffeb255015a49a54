//! `say` figures for BENCHMARKS.md: the time to render text to 8 kHz speech cold (a text
//! never said: espeak-ng runs, then the resampler) and cached (said before), for a
//! short line and a long one.
//!
//!     cargo bench -p wasmpbx --bench say
//!
//! A plain harness: percentiles of single renderings.
// Measuring happens on real time here.
#![allow(clippy::disallowed_methods)]

mod common;

use common::{ms, percentile, us};

use std::time::{Duration, Instant};

use wasmpbx::media::speech::Speaker;
use wasmpbx::routing::Speech;

const SHORT: &str = "Thank you for calling. Please hold.";
const LONG: &str = "Thank you for calling the accounts team. Our office hours are Monday to \
Friday, nine in the morning until five in the afternoon. If you are calling about an invoice, \
please have its number ready. For anything else, please stay on the line and the next \
available person will help you.";

fn render(speaker: &Speaker, text: &str) -> (Duration, Duration) {
    let t = Instant::now();
    let audio = speaker
        .render(&Speech::new(text, None), "en-us")
        .expect("espeak-ng renders");
    (t.elapsed(), audio.duration())
}

fn main() {
    common::print_machine();
    for (name, text) in [("short", SHORT), ("long", LONG)] {
        let speaker = Speaker::new();
        let n = 20;
        let mut cold = Vec::with_capacity(n);
        let mut spoken = Duration::ZERO;
        for i in 0..n {
            // A different text each time: nothing comes from the cache.
            let (took, length) = render(&speaker, &format!("{text} {i}."));
            cold.push(took);
            spoken = length;
        }
        cold.sort();
        let mut cached = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            cached.push(render(&speaker, &format!("{text} 0.")).0);
        }
        cached.sort();
        println!(
            "say {name:5} ({} chars, {:.1} s of speech): cold p50 {} p90 {}, cached p50 {} p99 {}",
            text.len(),
            spoken.as_secs_f64(),
            ms(percentile(&cold, 0.5)),
            ms(percentile(&cold, 0.9)),
            us(percentile(&cached, 0.5)),
            us(percentile(&cached, 0.99)),
        );
    }
}
