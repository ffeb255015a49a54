//! `wasmpbx script replay`: run recorded calls' decisions again, offline, on the store
//! (a copy of it will do). Each decision runs in the world its script saw — the clock
//! reading, the key-value entries it read, the vars, users and devices it was given —
//! writing nothing. On the version that decided (its bytes are in the store) every
//! decision must come out the same: a check that the recording is complete. On another
//! script (`--script FILE.wasm`) the differences are what that script would have changed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::directory::MemoryDirectory;
use crate::script::{EventWorld, HostServices, Limits, LoadedScript, ScriptEngine};
use crate::shadow::actions_line;
use crate::simulate::describe_event;
use crate::store::{DecisionRecord, Store};

/// What to replay.
pub struct ReplayOptions {
    /// One call (its session id); else the calls `since` / `location` / `limit` select.
    pub cdr: Option<String>,
    pub since: Option<jiff::Timestamp>,
    pub location: Option<String>,
    pub limit: usize,
    /// Run this script instead of the versions that decided.
    pub script: Option<PathBuf>,
}

/// One decision run again.
#[derive(Debug, Serialize)]
pub struct Step {
    pub event: String,
    /// The version that decided, and what the host did.
    pub hash: String,
    pub recorded: String,
    /// What the replayed script does now.
    pub replayed: String,
    pub same: bool,
}

/// One call run again.
#[derive(Debug, Serialize)]
pub struct CallReplay {
    pub session: String,
    pub steps: Vec<Step>,
}

/// Changes of one kind, over the calls replayed.
#[derive(Debug, Serialize)]
pub struct Change {
    pub event: String,
    pub recorded: String,
    pub replayed: String,
    pub count: u64,
    /// Up to three sessions.
    pub examples: Vec<String>,
}

/// The replay of many calls.
#[derive(Debug, Serialize)]
pub struct Replay {
    /// The script run: `recorded` (each decision's own version) or the file's name.
    pub script: String,
    pub calls: usize,
    pub decisions: usize,
    pub same: usize,
    pub changed: usize,
    /// Most frequent first.
    pub changes: Vec<Change>,
    pub seconds: f64,
    /// Every call, step by step (for one call, or `--json`).
    pub replays: Vec<CallReplay>,
}

/// Replay what `options` selects from `store`, with `config`'s limits, vars and users as
/// the fallback for anything a replacement script asks that the recording lacks.
pub fn replay(
    options: &ReplayOptions,
    config: &Config,
    store: Arc<dyn Store>,
) -> anyhow::Result<Replay> {
    let started = crate::clock::monotonic_now();
    let sessions = match &options.cdr {
        Some(session) => vec![session.clone()],
        None => {
            store.decision_sessions(options.location.as_deref(), options.since, options.limit)?
        }
    };
    if sessions.is_empty() {
        bail!("no recorded decisions match (is [scripts] record_decisions on?)");
    }
    let limits = Limits {
        deadline: Duration::from_millis(config.scripts.deadline_ms),
        memory_bytes: (config.scripts.memory_mib as usize) << 20,
    };
    let cache = std::path::absolute(config.cache_dir()).ok();
    let engine = ScriptEngine::new(limits, cache.as_deref())?;
    let services = Arc::new(HostServices {
        config: arc_swap::ArcSwap::from_pointee(config.clone()),
        kv: store.clone(),
        devices: Arc::new(MemoryDirectory::new()),
        clock: Arc::new(SystemClock),
    });
    let replacement = match &options.script {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("script");
            Some(Arc::new(
                engine
                    .load(name, &bytes, &services)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            ))
        }
        None => None,
    };
    let mut versions: HashMap<String, Arc<LoadedScript>> = HashMap::new();
    let mut replays = Vec::new();
    for session in &sessions {
        // Named as the live call's lines were: the span with the id's last 12 characters.
        let short = session
            .get(session.len().saturating_sub(12)..)
            .unwrap_or(session);
        let _span = tracing::info_span!("call", session = short).entered();
        let decisions = store.decisions(session)?;
        if decisions.is_empty() {
            bail!("no recorded decisions for {session}");
        }
        let mut steps = Vec::new();
        for decision in &decisions {
            let script = match &replacement {
                Some(script) => script.clone(),
                None => version(
                    &decision.hash,
                    decision,
                    &engine,
                    &services,
                    store.as_ref(),
                    &mut versions,
                )?,
            };
            steps.push(run(&script, decision, &engine, &services)?);
        }
        replays.push(CallReplay {
            session: session.clone(),
            steps,
        });
    }
    let mut changes: BTreeMap<(String, String, String), Change> = BTreeMap::new();
    let (mut decisions, mut same) = (0, 0);
    for call in &replays {
        for step in &call.steps {
            decisions += 1;
            if step.same {
                same += 1;
                continue;
            }
            let key = (
                step.event_kind(),
                step.recorded.clone(),
                step.replayed.clone(),
            );
            let change = changes.entry(key).or_insert_with(|| Change {
                event: step.event_kind(),
                recorded: step.recorded.clone(),
                replayed: step.replayed.clone(),
                count: 0,
                examples: Vec::new(),
            });
            change.count += 1;
            if change.examples.len() < 3 && !change.examples.contains(&call.session) {
                change.examples.push(call.session.clone());
            }
        }
    }
    let mut changes: Vec<Change> = changes.into_values().collect();
    changes.sort_by_key(|c| std::cmp::Reverse(c.count));
    Ok(Replay {
        script: match (&replacement, &options.script) {
            (Some(script), Some(path)) => format!("{} ({})", path.display(), &script.hash[..12]),
            _ => "recorded".into(),
        },
        calls: replays.len(),
        decisions,
        same,
        changed: decisions - same,
        changes,
        seconds: started.elapsed().as_secs_f64(),
        replays,
    })
}

impl Step {
    /// The event's kind (`incoming`, `digits-gathered` …), to group changes by.
    fn event_kind(&self) -> String {
        self.event.split(' ').next().unwrap_or_default().to_owned()
    }
}

/// The version that made `decision`, compiled once, from the store's copy.
fn version(
    hash: &str,
    decision: &DecisionRecord,
    engine: &ScriptEngine,
    services: &Arc<HostServices>,
    store: &dyn Store,
    versions: &mut HashMap<String, Arc<LoadedScript>>,
) -> anyhow::Result<Arc<LoadedScript>> {
    if let Some(script) = versions.get(hash) {
        return Ok(script.clone());
    }
    let Some(bytes) = store.script(hash)? else {
        bail!(
            "the store does not have version {} of {} (decided {}): replay it with --script FILE",
            &hash[..hash.len().min(12)],
            decision.script,
            decision.session
        );
    };
    let script = Arc::new(
        engine
            .load(&decision.script, &bytes, services)
            .map_err(|e| anyhow::anyhow!("{} ({}): {e}", decision.script, &hash[..12]))?,
    );
    versions.insert(hash.to_owned(), script.clone());
    Ok(script)
}

/// Run one decision again in its recorded world.
fn run(
    script: &LoadedScript,
    decision: &DecisionRecord,
    engine: &ScriptEngine,
    services: &Arc<HostServices>,
) -> anyhow::Result<Step> {
    let world: EventWorld = decision
        .world
        .read()
        .with_context(|| format!("{}: the recorded world is unreadable", decision.session))?;
    let result = script.route(
        engine,
        services,
        &decision.call,
        &decision.event,
        &mut world.shadow_of(),
    );
    let recorded = match &decision.fallback {
        Some(cause) => format!("(fallback: {cause}) {}", decision.summary),
        None => decision.summary.clone(),
    };
    let (replayed, same) = match result {
        Ok(actions) => {
            // Compared as JSON values, not texts: the same actions may be written with
            // their keys in another order (records from before the journal kept text).
            let json = serde_json::to_value(&actions).ok();
            let recorded = decision.actions.read::<serde_json::Value>().ok();
            let same = decision.fallback.is_none() && json.is_some() && json == recorded;
            (actions_line(&actions), same)
        }
        Err(failure) => (
            format!("(fails: {})", failure),
            decision.fallback.as_deref() == Some(failure.cause()),
        ),
    };
    Ok(Step {
        event: describe_event(&decision.event),
        hash: decision.hash.clone(),
        recorded,
        replayed,
        same,
    })
}

/// The replay as text: one call step by step, or many summarised.
pub fn text(replay: &Replay) -> String {
    let mut out = String::new();
    if let [call] = replay.replays.as_slice() {
        out.push_str(&format!(
            "call {} with {} script\n",
            call.session, replay.script
        ));
        for step in &call.steps {
            let mark = if step.same { "same   " } else { "CHANGED" };
            out.push_str(&format!("  {mark} {}\n", step.event));
            out.push_str(&format!("          recorded  {}\n", step.recorded));
            if !step.same {
                out.push_str(&format!("          replayed  {}\n", step.replayed));
            }
        }
    }
    out.push_str(&format!(
        "{} call{}, {} decisions replayed with the {} script in {:.2} s ({:.0} calls/s): {} the same, {} changed\n",
        replay.calls,
        if replay.calls == 1 { "" } else { "s" },
        replay.decisions,
        replay.script,
        replay.seconds,
        replay.calls as f64 / replay.seconds.max(1e-9),
        replay.same,
        replay.changed
    ));
    if replay.replays.len() > 1 {
        for change in &replay.changes {
            out.push_str(&format!(
                "  {:>6}× at {}\n          recorded  {}\n          replayed  {}\n          e.g. {}\n",
                change.count,
                change.event,
                change.recorded,
                change.replayed,
                change.examples.join(", ")
            ));
        }
    }
    out
}
