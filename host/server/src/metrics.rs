//! `/metrics`: what the host counts, in the Prometheus text format through
//! prometheus-client (HELP and TYPE on every family, label values escaped).
//!
//! The counters live where they are counted — the SIP core, the driver, the relay, the
//! script runtime — as plain numbers; a scrape takes a [`Snapshot`] of them and encodes
//! it. Names are given without `_total`: the encoder adds it to counters.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::admin::Admin;
use crate::pbx::PbxCounters;
use crate::script::MetricsSnapshot;
use crate::script::metrics::{BUCKETS, CAUSES};
use crate::trunks::{Health, RegistrationState, TrunkStatus};

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Dispositions, in the order of [`crate::driver::CallStats`]' per-location counts.
pub const DISPOSITIONS: [&str; 3] = ["answered", "abandoned", "failed"];

/// Everything `/metrics` shows, read at one scrape.
#[derive(Debug)]
pub struct Snapshot {
    pub registrations: usize,
    /// The phones registered with the edge, as the last heartbeat read them.
    pub phones_behind_edge: usize,
    pub active_calls: usize,
    pub core: PbxCounters,
    pub trunks: Vec<TrunkStatus>,
    /// Finished calls per disposition ([`DISPOSITIONS`]), all calls, and per location.
    pub calls: [u64; 3],
    pub calls_by_location: Vec<(String, [u64; 3])>,
    /// Flips of finished calls: done, denied, no-answer, cancelled.
    pub flips: [u64; 4],
    pub store_writes_dropped: u64,
    pub records_late: u64,
    pub tls_handshakes_failed: u64,
    pub sip_dropped_busy: u64,
    pub sip_wait: f64,
    pub timers_late: [u64; 3],
    pub timer_lag_max: f64,
    pub api_auth_failed: u64,
    pub relay: RelaySnapshot,
    pub scripts: MetricsSnapshot,
    /// Per script in the folder: the version serving calls, and whether the latest
    /// file dropped for it failed to load.
    pub script_versions: Vec<(String, Option<String>, bool)>,
    /// Per webhook: its origin, and events delivered, given up, retried, lost.
    pub webhooks: Vec<(String, [u64; 4])>,
    /// Shadow runs: agreed, diverged, faults.
    pub shadow: [u64; 3],
    /// The decision journal: decisions recorded, events dropped (queue full), writes
    /// the store refused.
    pub journal: [u64; 3],
}

/// The relay's counters.
#[derive(Debug, Default)]
pub struct RelaySnapshot {
    pub rtp_packets: u64,
    pub rtcp_packets: u64,
    pub played_packets: u64,
    pub digits_dropped: u64,
    pub webrtc_bridges: u64,
    pub streams_active: u64,
    pub stream_frames_sent: u64,
    pub stream_frames_dropped: u64,
    pub stream_failures: u64,
    pub srtp_rejected: u64,
    pub recording_frames_dropped: u64,
}

impl Snapshot {
    /// Read everything: the live parts from the core task, the rest from counters.
    pub async fn take(admin: &Admin) -> Self {
        let relay = &admin.relay;
        let calls = &admin.calls;
        let (registrations, phones_behind_edge) =
            admin.core.registration_counts().await.unwrap_or_default();
        Snapshot {
            registrations,
            phones_behind_edge,
            active_calls: admin.core.health().await.map_or(0, |h| h.live_calls),
            core: admin.core.counters().await.unwrap_or_default(),
            trunks: admin.core.trunks().await.unwrap_or_default(),
            calls: [
                calls.answered.load(Relaxed),
                calls.abandoned.load(Relaxed),
                calls.failed.load(Relaxed),
            ],
            calls_by_location: calls.by_location(),
            flips: calls.flips.each_ref().map(|f| f.load(Relaxed)),
            store_writes_dropped: calls.store_writes_dropped.load(Relaxed),
            records_late: calls.records_late.load(Relaxed),
            tls_handshakes_failed: calls.tls_handshakes_failed.load(Relaxed),
            sip_dropped_busy: calls.sip_dropped_busy.load(Relaxed),
            sip_wait: calls.sip_wait_us.load(Relaxed) as f64 / 1e6,
            timers_late: calls.timers_late.each_ref().map(|t| t.load(Relaxed)),
            timer_lag_max: calls.timer_lag_max_us.load(Relaxed) as f64 / 1e6,
            api_auth_failed: admin.api_auth_failed.load(Relaxed),
            relay: RelaySnapshot {
                rtp_packets: relay.rtp_packets.load(Relaxed),
                rtcp_packets: relay.rtcp_packets.load(Relaxed),
                played_packets: relay.played_packets.load(Relaxed),
                digits_dropped: relay.digits_dropped.load(Relaxed),
                webrtc_bridges: relay.webrtc_bridges.load(Relaxed),
                streams_active: relay.streams_active.load(Relaxed),
                stream_frames_sent: relay.stream_frames_sent.load(Relaxed),
                stream_frames_dropped: relay.stream_frames_dropped.load(Relaxed),
                stream_failures: relay.stream_failures.load(Relaxed),
                srtp_rejected: relay.srtp_rejected.load(Relaxed),
                recording_frames_dropped: relay.recording_frames_dropped.load(Relaxed),
            },
            scripts: admin.scripts.metrics.snapshot(),
            script_versions: admin
                .scripts
                .registry
                .status()
                .into_iter()
                .map(|s| (s.name, s.hash, s.last_error.is_some()))
                .collect(),
            webhooks: admin
                .webhooks
                .iter()
                .map(|w| {
                    let counts = [&w.delivered, &w.failed, &w.retried, &w.lost];
                    (w.target.clone(), counts.map(|c| c.load(Relaxed)))
                })
                .collect(),
            shadow: {
                let c = &admin.journal.counters.shadow;
                [&c.agreed, &c.diverged, &c.faults].map(|c| c.load(Relaxed))
            },
            journal: {
                let c = &admin.journal.counters;
                [&c.recorded, &c.dropped, &c.unsaved].map(|c| c.load(Relaxed))
            },
        }
    }

    /// The Prometheus text exposition.
    pub fn render(self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing into a String does not fail; an encoder error would be a bug here.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            tracing::error!("encoding /metrics: {e}");
        }
        out
    }
}

/// One family without labels, or with a series per label set.
fn counter(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeCounterValue,
) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(out.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(out.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn counters<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = out.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauges<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut family = out.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Snapshot {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let out = &mut out;
        gauges(
            out,
            "wasmpbx_build_info",
            "The running build: 1, labelled with its version and the script interface's.",
            [(
                [
                    ("version", env!("CARGO_PKG_VERSION")),
                    ("wit", crate::script::WIT_VERSION),
                ],
                1,
            )],
        )?;
        self.sip(out)?;
        self.calls(out)?;
        self.trunks(out)?;
        self.media(out)?;
        self.scripts(out)?;
        self.shadow(out)?;
        self.webhooks(out)
    }
}

impl Snapshot {
    fn sip(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        counter(
            out,
            "wasmpbx_sip_messages",
            "SIP messages received.",
            self.core.messages_in,
        )?;
        counter(
            out,
            "wasmpbx_sip_malformed",
            "SIP messages refused as malformed.",
            self.core.malformed,
        )?;
        counter(
            out,
            "wasmpbx_sip_dropped_busy",
            "SIP datagrams dropped because their signalling shard was thousands of messages \
             behind (stalled); their senders retransmit.",
            self.sip_dropped_busy,
        )?;
        counters(
            out,
            "wasmpbx_auth_failures",
            "Failed authentications: SIP digest and phone sign-ins (wrong password, unknown \
             user, another's extension), requests refused from a source blocked for failing \
             too often, and admin API requests without the right token.",
            [
                ([("kind", "sip")], self.core.auth_failed),
                ([("kind", "sip-blocked")], self.core.auth_throttled),
                ([("kind", "api-token")], self.api_auth_failed),
            ],
        )?;
        gauge(
            out,
            "wasmpbx_registrations",
            "Device registrations held now.",
            self.registrations as i64,
        )?;
        gauge(
            out,
            "wasmpbx_phones_behind_edge",
            "Phones registered with the edge (shared store), as the last heartbeat read them.",
            self.phones_behind_edge as i64,
        )?;
        counter(
            out,
            "wasmpbx_sip_tls_handshakes_failed",
            "Connections to a SIP tls: listener whose handshake failed.",
            self.tls_handshakes_failed,
        )?;
        counter(
            out,
            "wasmpbx_calls_refused_overload",
            "New calls refused at once with 503 because SIP messages waited too long for the \
             core.",
            self.core.refused_overloaded,
        )?;
        gauge(
            out,
            "wasmpbx_sip_queue_wait_seconds",
            "How long SIP messages wait for the core, smoothed: the overload signal (new calls \
             are refused from 0.02 s, all of them at 0.12 s).",
            self.sip_wait,
        )?;
        counters(
            out,
            "wasmpbx_sip_timers_late",
            "SIP timers that fired late, by how late (seconds): a busy or stalled loop, which \
             every message waits for too.",
            crate::driver::TIMER_LATE
                .iter()
                .zip(self.timers_late)
                .map(|(bound, n)| ([("over", bound.as_secs_f64().to_string())], n)),
        )?;
        gauge(
            out,
            "wasmpbx_sip_timer_lag_max_seconds",
            "The latest a SIP timer has fired since start.",
            self.timer_lag_max,
        )
    }

    fn calls(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        gauge(
            out,
            "wasmpbx_active_calls",
            "Calls in progress now.",
            self.active_calls as i64,
        )?;
        counters(
            out,
            "wasmpbx_calls",
            "Finished calls by disposition.",
            DISPOSITIONS
                .iter()
                .zip(self.calls)
                .map(|(d, n)| ([("disposition", *d)], n)),
        )?;
        counters(
            out,
            "wasmpbx_location_calls",
            "Finished calls to a location's flip number, by location and disposition.",
            self.calls_by_location
                .iter()
                .flat_map(|(location, counts)| {
                    DISPOSITIONS.iter().zip(*counts).map(move |(d, n)| {
                        ([("location", location.as_str()), ("disposition", *d)], n)
                    })
                }),
        )?;
        counters(
            out,
            "wasmpbx_flips",
            "Call flips of finished calls by result.",
            ["done", "denied", "no-answer", "cancelled"]
                .iter()
                .zip(self.flips)
                .map(|(r, n)| ([("result", *r)], n)),
        )?;
        counter(
            out,
            "wasmpbx_store_writes_dropped",
            "Records and registration changes dropped because the store fell too far behind.",
            self.store_writes_dropped,
        )?;
        counter(
            out,
            "wasmpbx_records_late",
            "Call records not yet written when their calls' messages went out (the store was \
             over 100 ms behind).",
            self.records_late,
        )
    }

    fn trunks(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        gauges(
            out,
            "wasmpbx_trunk_registered",
            "1 while the trunk's registration with the carrier holds (trunks that register).",
            self.trunks.iter().filter_map(|trunk| {
                let registration = trunk.registration.as_ref()?;
                let up = i64::from(registration.state == RegistrationState::Registered);
                Some(([("trunk", trunk.name.as_str())], up))
            }),
        )?;
        gauges(
            out,
            "wasmpbx_trunk_target_up",
            "1 while a trunk target answers (calls, health checks).",
            self.trunks.iter().flat_map(|trunk| {
                trunk.targets.iter().map(|target| {
                    (
                        [
                            ("trunk", trunk.name.clone()),
                            ("target", target.address.to_string()),
                        ],
                        i64::from(target.state != Health::Down),
                    )
                })
            }),
        )
    }

    fn media(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let relay = &self.relay;
        for (name, help, value) in [
            (
                "wasmpbx_rtp_packets_relayed",
                "RTP packets relayed between the legs of calls.",
                relay.rtp_packets,
            ),
            (
                "wasmpbx_rtcp_packets_relayed",
                "RTCP packets relayed between the legs of calls.",
                relay.rtcp_packets,
            ),
            (
                "wasmpbx_rtp_packets_played",
                "RTP packets of the host's own: prompts, ringback, speech.",
                relay.played_packets,
            ),
            (
                "wasmpbx_dtmf_events_dropped",
                "Caller digits not passed on because the core's queue was full (a DTMF flood).",
                relay.digits_dropped,
            ),
            (
                "wasmpbx_srtp_packets_rejected",
                "SRTP and SRTCP packets dropped on encrypted legs: failed authentication, or \
                 replays.",
                relay.srtp_rejected,
            ),
            (
                "wasmpbx_recording_audio_dropped_ms",
                "Milliseconds of call recordings left silent because the disk fell behind \
                 (a recording keeps its length).",
                relay.recording_frames_dropped / 8,
            ),
            (
                "wasmpbx_media_stream_frames_sent",
                "Audio frames sent to engines.",
                relay.stream_frames_sent,
            ),
            (
                "wasmpbx_media_stream_frames_dropped",
                "Audio frames lost: an engine too slow, or its connection down.",
                relay.stream_frames_dropped,
            ),
            (
                "wasmpbx_media_stream_failures",
                "Stream connections that failed or were lost.",
                relay.stream_failures,
            ),
        ] {
            counter(out, name, help, value)?;
        }
        gauge(
            out,
            "wasmpbx_webrtc_bridges",
            "Browsers' WebRTC bridges running now.",
            relay.webrtc_bridges as i64,
        )?;
        gauge(
            out,
            "wasmpbx_media_streams",
            "Media streams to engines running now.",
            relay.streams_active as i64,
        )
    }

    fn shadow(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let [agreed, diverged, faults] = self.shadow;
        counters(
            out,
            "wasmpbx_shadow_events",
            "Events a location's shadow script also decided: agreed with the serving \
             script, diverged, or the shadow failed.",
            [
                ([("result", "agreed")], agreed),
                ([("result", "diverged")], diverged),
                ([("result", "fault")], faults),
            ],
        )?;
        let [recorded, dropped, unsaved] = self.journal;
        counter(
            out,
            "wasmpbx_decisions_recorded",
            "Routing decisions recorded with what their script saw, for replay.",
            recorded,
        )?;
        counter(
            out,
            "wasmpbx_decisions_dropped",
            "Decisions neither recorded nor shadowed: the journal's queue was full.",
            dropped,
        )?;
        counter(
            out,
            "wasmpbx_decisions_unsaved",
            "Recorded decisions and shadow results the store refused.",
            unsaved,
        )
    }

    fn webhooks(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let series = |index: usize| {
            self.webhooks
                .iter()
                .map(move |(target, counts)| ([("webhook", target.as_str())], counts[index]))
        };
        counters(
            out,
            "wasmpbx_webhook_delivered",
            "Events a webhook's endpoint accepted (2xx).",
            series(0),
        )?;
        counters(
            out,
            "wasmpbx_webhook_failed",
            "Events given up: refused, or still failing after the retries.",
            series(1),
        )?;
        counters(
            out,
            "wasmpbx_webhook_retries",
            "Attempts that failed and were tried again.",
            series(2),
        )?;
        counters(
            out,
            "wasmpbx_webhook_events_lost",
            "Events a webhook missed because it fell too far behind the event stream.",
            series(3),
        )
    }

    fn scripts(&self, out: &mut DescriptorEncoder) -> fmt::Result {
        let scripts = &self.scripts;
        let labels = |v: &crate::script::VersionSnapshot| {
            [("script", v.script.clone()), ("version", v.version.clone())]
        };
        counters(
            out,
            "wasmpbx_script_decisions",
            "Script decisions that were followed, by script and version (content hash).",
            scripts.versions.iter().map(|v| (labels(v), v.decisions)),
        )?;
        counters(
            out,
            "wasmpbx_script_fallbacks",
            "Events the host's fallback routed because the script failed, by script, version \
             (empty: none loaded) and cause.",
            scripts.versions.iter().flat_map(|v| {
                CAUSES.iter().zip(v.fallbacks).map(move |(cause, n)| {
                    let [script, version] = labels(v);
                    ([script, version, ("cause", (*cause).to_owned())], n)
                })
            }),
        )?;
        let mut latency = out.encode_descriptor(
            "wasmpbx_script_decision_seconds",
            "Time to run one event in a fresh instance, by script and version.",
            None,
            MetricType::Histogram,
        )?;
        for v in &scripts.versions {
            let buckets: Vec<(f64, u64)> = BUCKETS.iter().copied().zip(v.latency_buckets).collect();
            latency
                .encode_family(&labels(v))?
                .encode_histogram::<NoLabelSet>(
                    v.latency_sum.as_secs_f64(),
                    v.latency_count,
                    &buckets,
                    None,
                )?;
        }
        gauges(
            out,
            "wasmpbx_script_loaded",
            "1 for the version of each script serving calls.",
            self.script_versions
                .iter()
                .filter_map(|(script, version, _)| {
                    Some((
                        [
                            ("script", script.as_str()),
                            ("version", version.as_deref()?),
                        ],
                        1,
                    ))
                }),
        )?;
        gauges(
            out,
            "wasmpbx_script_load_failing",
            "1 while the latest file of a script failed to load (the previous version, if \
             any, keeps serving).",
            self.script_versions
                .iter()
                .map(|(script, _, failing)| ([("script", script.as_str())], i64::from(*failing))),
        )?;
        counter(
            out,
            "wasmpbx_script_reloads",
            "Script versions loaded from the watched folder, at start and on every change.",
            scripts.reloads,
        )?;
        counter(
            out,
            "wasmpbx_script_rejected_files",
            "Files in the scripts folder that failed to load (not a component, wrong \
             imports, no known export).",
            scripts.rejected_files,
        )
    }
}
