//! `wasmpbx script simulate`: one call's routing decisions (or one flip decision),
//! offline, through the real runtime — same limits, same host imports, with the clock
//! stopped at `--at` and a key-value store seeded from `--kv`.
//!
//! The simulated call follows the actions as the host would: a `gather` is answered with
//! the next digits from `--digits` (`,` separates the answers to successive gathers; no
//! digits left means a timeout with none), a `forward` connects unless `--fail-forward`
//! gives it a failure status, `reject` and `hangup` end the call. Then `call-ended` is
//! sent, as on a live call. Each `--event name=value` (an engine's intent) arrives when
//! the call next waits for the caller (a prompt, speech or gather) and is handled as the
//! live host does: a list that steers the call takes it over, anything else applies
//! beside what was under way, which then goes on.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;

use crate::clock::FixedClock;
use crate::config::{Config, Location};
use crate::directory::{DeviceInfo, MemoryDirectory};
use crate::flip::{CallFacts, Direction, FlipDecision, FlipKind, FlipRequest, Trigger};
use crate::routing::{
    Action, CallInfo, Decision, Disposition, Event, Fallback, GatherEnd, Origin, ScriptRef, Speech,
    fallback_actions,
};
use crate::store::{KvStore, MemoryStore};
use crate::{HostServices, Limits, ScriptEngine, ScriptHost};
use wasmpbx_types::actions::{self, ActionHost, Forward, Gather, MediaStream};
use wasmpbx_types::media::Prompts;

/// The most events one simulated call may take (a script looping on gathers).
const MAX_EVENTS: usize = 32;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub from: String,
    pub to: String,
    pub at: jiff::Timestamp,
    /// Answers to successive gathers, `,`-separated.
    pub digits: String,
    /// Failure statuses for successive forwards.
    pub fail_forwards: Vec<u16>,
    /// Key-value entries of the location, as set by an admin.
    pub kv: Vec<(String, String)>,
    /// External events (name, value), delivered one at each wait for the caller.
    pub events: Vec<(String, String)>,
}

/// A flip request to simulate.
#[derive(Debug, Clone)]
pub struct FlipScenario {
    pub user: String,
    pub kind: FlipKind,
    pub requesting_device: String,
    pub current_device: String,
    /// The user's other registered devices.
    pub devices: Vec<String>,
    pub emergency: bool,
    pub at: jiff::Timestamp,
}

/// One line of a simulation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    Event(Event),
    Action(Action),
    Fallback(Fallback),
    /// How the simulated call ended, or a remark.
    Note(String),
}

/// A simulated call.
#[derive(Debug, Clone, Serialize)]
pub struct Simulation {
    pub script: ScriptRef,
    pub location: Option<String>,
    pub steps: Vec<Step>,
}

/// A simulated flip decision.
#[derive(Debug, Clone, Serialize)]
pub struct FlipSimulation {
    pub script: ScriptRef,
    pub request: FlipRequest,
    pub decision: Option<FlipDecision>,
    /// Set when the script failed (the host would deny the flip).
    pub failure: Option<String>,
}

/// Host services for offline use (`script check`): the real clock, an empty key-value
/// store and no registered devices.
pub fn offline_services(config: &Config) -> Arc<HostServices> {
    Arc::new(HostServices {
        config: arc_swap::ArcSwap::from_pointee(config.clone()),
        kv: Arc::new(MemoryStore::new()),
        devices: Arc::new(MemoryDirectory::new()),
        clock: Arc::new(crate::clock::SystemClock),
    })
}

/// Load `file` into a runtime built from `config` with a clock stopped at `at`.
fn runtime(
    file: &Path,
    config: &Config,
    at: jiff::Timestamp,
    kv: Arc<dyn KvStore>,
    devices: Arc<MemoryDirectory>,
) -> anyhow::Result<(ScriptHost, String)> {
    let limits = Limits {
        deadline: std::time::Duration::from_millis(config.scripts.deadline_ms),
        memory_bytes: (config.scripts.memory_mib as usize) << 20,
    };
    // The config's compilation cache, as `run` uses it: a big guest (JavaScript,
    // Python) compiles once, not at every simulation.
    let cache_dir = std::path::absolute(config.cache_dir())
        .with_context(|| format!("scripts.cache_dir: {}", config.cache_dir().display()))?;
    let engine = ScriptEngine::new(limits, Some(&cache_dir))?;
    let services = Arc::new(HostServices {
        config: arc_swap::ArcSwap::from_pointee(config.clone()),
        kv,
        devices,
        clock: Arc::new(FixedClock(at)),
    });
    let host = ScriptHost::new(engine, services);
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("script")
        .to_owned();
    let script = host
        .engine
        .load(&name, &bytes, &host.services)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    host.registry.install(script);
    Ok((host, name))
}

/// Run one call through the routing script in `file`.
pub fn simulate_call(
    file: &Path,
    config: &Config,
    scenario: &Scenario,
) -> anyhow::Result<Simulation> {
    let location = config.location_by_flip_number(&scenario.to).cloned();
    let kv = Arc::new(MemoryStore::new());
    if let Some(location) = &location {
        for (key, value) in &scenario.kv {
            kv.set(&location.name, key, value)?;
        }
    } else if !scenario.kv.is_empty() {
        anyhow::bail!(
            "--kv needs a location: no location has flip number {}",
            scenario.to
        );
    }
    let (host, name) = runtime(
        file,
        config,
        scenario.at,
        kv,
        Arc::new(MemoryDirectory::new()),
    )?;
    let origin = match config.user_by_extension(&scenario.from) {
        Some(user) => Origin::Device {
            user_id: user.id.clone(),
            device: "simulated".into(),
        },
        None => Origin::Trunk {
            name: config
                .trunks
                .first()
                .map(|t| t.name.clone())
                .unwrap_or_else(|| "pstn".into()),
        },
    };
    let mut call = CallInfo {
        call_id: "simulated-1".into(),
        location: location.as_ref().map(|l| l.name.clone()),
        caller: scenario.from.clone(),
        caller_name: None,
        dialed: scenario.to.clone(),
        origin,
        started_at: scenario.at,
        tags: Vec::new(),
    };

    let prompts = Prompts::load(&config.media.prompts).0;
    let mut sim = Simulated {
        call: &mut call,
        location: location.as_ref(),
        prompts: &prompts,
        steps: Vec::new(),
        digits: scenario
            .digits
            .split(',')
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .into_iter(),
        fail_forwards: scenario.fail_forwards.clone().into_iter(),
        external: scenario.events.clone().into_iter(),
        interrupted: None,
        next: None,
        answered: false,
        over: false,
        falling_back: false,
        disposition: Disposition::Failed,
    };
    let mut pinned = None;
    let mut event = Event::Incoming;
    let mut script_ref = None;
    for _ in 0..MAX_EVENTS {
        let (decision, loaded) = host.route(&name, pinned.as_ref(), sim.location, sim.call, &event);
        pinned = pinned.or(loaded);
        sim.steps.push(Step::Event(event.clone()));
        let Decision {
            actions,
            script,
            fallback,
        } = decision;
        script_ref = script_ref.or(script);
        let interrupted = sim.interrupted.take();
        if let Some(fallback) = fallback {
            sim.steps.push(Step::Fallback(fallback));
            if let Some(waiting) = interrupted {
                // A script that fails on an external event leaves the call as it was.
                sim.resume(waiting);
            } else {
                actions::run(&mut sim, actions);
            }
        } else if let Some(waiting) = interrupted {
            sim.external_decided(actions, waiting);
        } else {
            actions::run(&mut sim, actions);
        }
        match sim.next.take() {
            Some(next) if !sim.over => event = next,
            _ => break,
        }
    }
    let (disposition, mut steps) = (sim.disposition, sim.steps);
    let ended = Event::CallEnded {
        disposition,
        duration_ms: 0,
    };
    let (decision, _) = host.route(&name, pinned.as_ref(), location.as_ref(), &call, &ended);
    steps.push(Step::Event(ended));
    steps.extend(decision.actions.into_iter().map(Step::Action));
    let script = script_ref.unwrap_or(ScriptRef {
        name,
        hash: String::new(),
    });
    Ok(Simulation {
        script,
        location: call.location,
        steps,
    })
}

/// A simulated call carrying out its script's actions, through the same interpreter as
/// a live one: prompts are checked against the config's set and play at once, a gather
/// takes the next of `--digits`, a forward fails with the next of `--fail-forward` or
/// connects.
struct Simulated<'a> {
    call: &'a mut CallInfo,
    location: Option<&'a Location>,
    prompts: &'a Prompts,
    steps: Vec<Step>,
    digits: std::vec::IntoIter<String>,
    fail_forwards: std::vec::IntoIter<u16>,
    external: std::vec::IntoIter<(String, String)>,
    /// What the call was waiting on when an external event arrived.
    interrupted: Option<Waiting>,
    /// The script's next event, when the actions led to one.
    next: Option<Event>,
    answered: bool,
    over: bool,
    falling_back: bool,
    disposition: Disposition,
}

/// What a simulated call waits on.
enum Waiting {
    /// A prompt or speech to end; then these actions.
    Rest(Vec<Action>),
    Gather(Gather),
}

impl Simulated<'_> {
    /// The call waits for the caller: the next external event, if any, arrives now.
    fn wait(&mut self, waiting: Waiting) {
        match self.external.next() {
            Some((name, value)) => {
                self.call.set_tag(&name, &value);
                self.interrupted = Some(waiting);
                self.next = Some(Event::External {
                    name,
                    value,
                    confidence: None,
                });
            }
            None => self.resume(waiting),
        }
    }

    fn resume(&mut self, waiting: Waiting) {
        match waiting {
            Waiting::Rest(rest) => actions::run(self, rest),
            Waiting::Gather(gather) => {
                let typed = self.digits.next().unwrap_or_default();
                self.next = Some(gathered(typed, gather.max_digits, gather.terminator));
            }
        }
    }

    /// The script's answer to an external event that arrived while the call waited.
    fn external_decided(&mut self, actions: Vec<Action>, waiting: Waiting) {
        if actions.iter().any(Action::takes_over) {
            return actions::run(self, actions);
        }
        for action in actions {
            self.will_run(&action);
            match action {
                Action::SetTag { name, value } => self.call.set_tag(&name, &value),
                Action::Recording { .. } | Action::MediaStream(_) => {}
                other => self.steps.push(Step::Note(format!(
                    "{} ignored: only set-tag, recording and media-stream apply beside what is under way",
                    other.name()
                ))),
            }
        }
        self.resume(waiting);
    }

    fn prompt(&self, verb: &str, name: &str) -> Result<(), String> {
        match self.prompts.get(name) {
            Some(_) => Ok(()),
            None => Err(format!("{verb}: no prompt named {name:?}")),
        }
    }

    fn end(&mut self, disposition: Disposition, how: String) {
        self.disposition = disposition;
        self.over = true;
        self.steps.push(Step::Note(how));
    }
}

impl ActionHost for Simulated<'_> {
    fn will_run(&mut self, action: &Action) {
        self.steps.push(Step::Action(action.clone()));
    }

    fn is_over(&self) -> bool {
        self.over
    }

    fn set_tag(&mut self, name: &str, value: &str) {
        self.call.set_tag(name, value);
    }

    fn answer(&mut self) -> Result<(), String> {
        self.answered = true;
        Ok(())
    }

    fn recording(&mut self, _on: bool) -> Result<(), String> {
        Ok(())
    }

    fn play(&mut self, prompt: &str, rest: Vec<Action>) -> Result<(), String> {
        self.prompt("play", prompt)?;
        self.answered = true;
        self.wait(Waiting::Rest(rest));
        Ok(())
    }

    /// Speech is not rendered offline: what matters here is what the script does next.
    fn say(&mut self, _speech: Speech, rest: Vec<Action>) -> Result<(), String> {
        self.answered = true;
        self.wait(Waiting::Rest(rest));
        Ok(())
    }

    fn media_stream(&mut self, _stream: MediaStream) -> Result<(), String> {
        Ok(())
    }

    fn gather(&mut self, gather: Gather) -> Result<(), String> {
        if let Some(prompt) = &gather.prompt {
            self.prompt("gather", prompt)?;
        }
        self.answered = true;
        self.wait(Waiting::Gather(gather));
        Ok(())
    }

    fn forward(&mut self, forward: Forward) {
        match self.fail_forwards.next() {
            Some(status) => {
                self.next = Some(Event::ForwardFailed {
                    target: forward.target,
                    status,
                    // The table the live host uses, so scripts see the same reasons.
                    reason: crate::sip::message::reason_phrase(status).into(),
                });
            }
            None => self.end(Disposition::Answered, "the forward connects".into()),
        }
    }

    fn reject(&mut self, status: u16, _reason: Option<String>) {
        self.end(
            Disposition::Failed,
            format!("the call is rejected with {status}"),
        );
    }

    fn hangup(&mut self) {
        let disposition = match self.answered {
            true => Disposition::Answered,
            false => Disposition::Failed,
        };
        self.end(disposition, "the script hangs up".into());
    }

    fn nothing_to_wait_for(&mut self) {
        let why = "the call ends: the script gave no terminal action".to_owned();
        self.end(Disposition::Failed, why);
    }

    fn failed(&mut self, why: String) {
        if self.falling_back {
            return self.end(Disposition::Failed, format!("{why} (while falling back)"));
        }
        self.falling_back = true;
        self.steps.push(Step::Note(format!("{why}; falling back")));
        actions::run(self, fallback_actions(self.location));
    }
}

/// What a gather would collect from `typed` (the caller's keys for this gather).
fn gathered(typed: String, max_digits: u8, terminator: Option<char>) -> Event {
    let mut digits = String::new();
    for key in typed.chars() {
        if Some(key) == terminator {
            return Event::DigitsGathered {
                digits,
                ended_by: GatherEnd::Terminator,
            };
        }
        digits.push(key);
        if digits.len() == usize::from(max_digits) {
            return Event::DigitsGathered {
                digits,
                ended_by: GatherEnd::MaxDigits,
            };
        }
    }
    Event::DigitsGathered {
        digits,
        ended_by: GatherEnd::Timeout,
    }
}

/// Run one flip request through the flip-policy script in `file`.
pub fn simulate_flip(
    file: &Path,
    config: &Config,
    scenario: &FlipScenario,
) -> anyhow::Result<FlipSimulation> {
    let devices = Arc::new(MemoryDirectory::new());
    let device = |name: &str| DeviceInfo {
        name: name.to_owned(),
        user_id: scenario.user.clone(),
        user_agent: Some("simulated".into()),
        transport: "udp".into(),
    };
    for name in std::iter::once(&scenario.current_device).chain(&scenario.devices) {
        devices.upsert(device(name));
    }
    let (host, name) = runtime(
        file,
        config,
        scenario.at,
        Arc::new(MemoryStore::new()),
        devices.clone(),
    )?;
    let candidates = match scenario.kind {
        FlipKind::Pull => vec![device(&scenario.requesting_device)],
        FlipKind::Push => scenario.devices.iter().map(|n| device(n)).collect(),
    };
    let request = FlipRequest {
        user_id: scenario.user.clone(),
        requesting_device: scenario.requesting_device.clone(),
        kind: scenario.kind,
        trigger: match scenario.kind {
            FlipKind::Pull => Trigger::PullCode,
            FlipKind::Push => Trigger::PushCode,
        },
        call: CallFacts {
            call_id: "simulated-1".into(),
            remote_party: "+15550123".into(),
            direction: Direction::Inbound,
            duration_ms: 60_000,
            emergency: scenario.emergency,
            location: None,
            current_device: scenario.current_device.clone(),
        },
        candidates,
    };
    let script = host.registry.get(&name).map(|s| ScriptRef {
        name: s.name.clone(),
        hash: s.hash.clone(),
    });
    let (decision, failure) = match host.decide_flip(&name, &request) {
        Ok(decision) => (Some(decision), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(FlipSimulation {
        script: script.expect("installed above"),
        request,
        decision,
        failure,
    })
}

impl Simulation {
    /// The human-readable transcript.
    pub fn render(&self) -> String {
        let mut out = format!(
            "script {} ({})\n",
            self.script.name,
            &self.script.hash[..self.script.hash.len().min(12)]
        );
        match &self.location {
            Some(l) => out.push_str(&format!("location {l}\n")),
            None => {
                out.push_str("location none (no location has this flip number: vars are empty)\n")
            }
        }
        for step in &self.steps {
            let line = match step {
                Step::Event(e) => format!("event    {}", describe_event(e)),
                Step::Action(a) => format!("  action {}", describe_action(a)),
                Step::Fallback(f) => format!("  FALLBACK ({}) {}", f.cause, f.message),
                Step::Note(n) => format!("  -> {n}"),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

pub fn describe_event(event: &Event) -> String {
    match event {
        Event::Incoming => "incoming".into(),
        Event::DigitsGathered { digits, ended_by } => {
            format!("digits-gathered {digits:?} ({ended_by:?})")
        }
        Event::ForwardFailed { status, reason, .. } => format!("forward-failed {status} {reason}"),
        Event::CallEnded { disposition, .. } => format!("call-ended ({disposition:?})"),
        Event::External {
            name,
            value,
            confidence,
        } => match confidence {
            Some(c) => format!("external {name}={value} (confidence {c})"),
            None => format!("external {name}={value}"),
        },
    }
}

pub fn describe_action(action: &Action) -> String {
    use crate::routing::ForwardTarget;
    match action {
        Action::Forward {
            target,
            ring_timeout_ms,
            caller_id,
            trunk,
        } => {
            let target = match target {
                ForwardTarget::Number(n) => format!("number {n}"),
                ForwardTarget::User(u) => format!("user {u}"),
                ForwardTarget::Fallback => "fallback".into(),
            };
            let mut line = format!("forward {target} ring {ring_timeout_ms} ms");
            if let Some(t) = trunk {
                line.push_str(&format!(" via {t}"));
            }
            if let Some(c) = caller_id {
                line.push_str(&format!(" as {c}"));
            }
            line
        }
        Action::Answer => "answer".into(),
        Action::Play { prompt } => format!("play {prompt}"),
        Action::Say(speech) => describe_speech("say", speech),
        Action::MediaStream(MediaStream {
            url,
            tracks,
            parameters,
            engine_audio,
        }) => {
            let mut line = format!(
                "media-stream {} tracks {tracks:?} engine audio {engine_audio:?}",
                crate::media::redacted_url(url)
            );
            for (name, value) in parameters {
                line.push_str(&format!(" {name}={value}"));
            }
            line
        }
        Action::Gather {
            max_digits,
            timeout_ms,
            inter_digit_timeout_ms,
            terminator,
            prompt,
            say,
        } => {
            let mut line = format!("gather max {max_digits} timeout {timeout_ms} ms");
            if inter_digit_timeout_ms != timeout_ms {
                line.push_str(&format!(" then {inter_digit_timeout_ms} ms between digits"));
            }
            if let Some(t) = terminator {
                line.push_str(&format!(" until {t}"));
            }
            if let Some(p) = prompt {
                line.push_str(&format!(" prompt {p}"));
            }
            if let Some(speech) = say {
                line.push(' ');
                line.push_str(&describe_speech("saying", speech));
            }
            line
        }
        Action::Recording { on } => format!("recording {}", if *on { "on" } else { "off" }),
        Action::SetTag { name, value } => format!("set-tag {name}={value}"),
        Action::Reject { status, reason } => {
            format!("reject {status} {}", reason.as_deref().unwrap_or(""))
        }
        Action::Hangup => "hangup".into(),
    }
}

fn describe_speech(verb: &str, speech: &Speech) -> String {
    match &speech.voice {
        Some(voice) => format!("{verb} {:?} voice {voice}", speech.text),
        None => format!("{verb} {:?}", speech.text),
    }
}

impl FlipSimulation {
    pub fn render(&self) -> String {
        let r = &self.request;
        let mut out = format!(
            "script {} ({})\nrequest  {:?} by {} for user {} (call on {}, emergency {})\n",
            self.script.name,
            &self.script.hash[..12],
            r.kind,
            r.requesting_device,
            r.user_id,
            r.call.current_device,
            r.call.emergency
        );
        match (&self.decision, &self.failure) {
            (Some(FlipDecision::Allow(a)), _) => out.push_str(&format!(
                "decision allow targets {:?} ring {} ms\n",
                a.targets, a.ring_timeout_ms
            )),
            (Some(FlipDecision::RequirePin(a)), _) => out.push_str(&format!(
                "decision require-pin targets {:?} ring {} ms\n",
                a.targets, a.ring_timeout_ms
            )),
            (Some(FlipDecision::Deny { reason }), _) => {
                out.push_str(&format!("decision deny: {reason}\n"))
            }
            (None, Some(f)) => out.push_str(&format!("FAILED ({f}): the host denies the flip\n")),
            (None, None) => {}
        }
        out
    }
}
