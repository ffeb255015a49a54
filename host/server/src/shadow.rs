//! Shadow evaluation: a location may name a second script (`[[locations]] shadow`, or
//! `PUT /api/locations/{name}/shadow`) that runs on every event of its calls, on the
//! same inputs as the serving script (the clock readings it took and the key-value
//! entries it read; the same directory), and whose actions are never applied. The
//! comparisons are stored, and summarised by `GET /api/shadow/{location}` and
//! `wasmpbx shadow report LOCATION`.
//!
//! Off the call's path: the driver hands each served event to the decision journal's
//! queue (`decisions`) and goes on; its thread runs the shadows, one at a time, under
//! the engine's deadline and memory cap, and writes what they did. A full queue drops
//! the event and counts it; a shadow that traps or loops costs only that thread's time.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

use crate::config::Location;
use crate::decisions::Served;
use crate::routing::{Action, Decision};
use crate::script::ScriptHost;
use crate::simulate::{describe_action, describe_event};
use crate::store::{KvStore, ShadowResult};

/// The key-value scope where the API's choices are kept (no location has this name:
/// location names cannot start with `@`).
const CHOICES: &str = "@shadow";

/// Which locations run a shadow: the config's `shadow`, unless the API chose otherwise.
pub struct Choices {
    kv: Arc<dyn KvStore>,
    /// The API's choices: a script, or none (off whatever the config says).
    chosen: arc_swap::ArcSwap<HashMap<String, Option<String>>>,
}

impl Choices {
    /// The API's choices as the store has them.
    pub fn load(kv: Arc<dyn KvStore>) -> crate::store::Result<Self> {
        let chosen = kv
            .list(CHOICES)?
            .into_iter()
            .map(|(location, script)| (location, Some(script).filter(|s| s != OFF)))
            .collect();
        Ok(Self {
            kv,
            chosen: arc_swap::ArcSwap::from_pointee(chosen),
        })
    }

    /// The shadow script of `location`, if any.
    pub fn of(&self, location: &Location) -> Option<String> {
        match self.chosen.load().get(&location.name) {
            Some(chosen) => chosen.clone(),
            None => location.shadow.clone(),
        }
    }

    /// The API's choice for `location`: a script, none (off), or back to the config's
    /// (`Reset`).
    pub fn choose(&self, location: &str, choice: Choice) -> crate::store::Result<()> {
        match &choice {
            Choice::Script(script) => self.kv.set(CHOICES, location, script)?,
            // An empty value is not an entry: "off" is a marker of its own.
            Choice::Off => self.kv.set(CHOICES, location, OFF)?,
            Choice::Reset => self.kv.delete(CHOICES, location)?,
        }
        let mut chosen = HashMap::clone(&self.chosen.load());
        match choice {
            Choice::Script(script) => chosen.insert(location.to_owned(), Some(script)),
            Choice::Off => chosen.insert(location.to_owned(), None),
            Choice::Reset => chosen.remove(location),
        };
        self.chosen.store(Arc::new(chosen));
        Ok(())
    }
}

/// How "no shadow, whatever the config says" is stored.
const OFF: &str = "-";

/// What the API may say of a location's shadow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Script(String),
    Off,
    Reset,
}

/// Run `shadow` on a served event, in that event's world, and compare.
pub fn compare(
    scripts: &ScriptHost,
    shadow: String,
    served: &Served,
    counters: &Counters,
) -> ShadowResult {
    let (version, outcome) = scripts.shadow(&shadow, &served.call, &served.event, &served.world);
    let (shadow_line, fault, agreed) = match outcome {
        Ok(actions) => {
            let agreed = served.decision.fallback.is_none() && actions == served.decision.actions;
            (Some(actions_line(&actions)), None, agreed)
        }
        Err(failure) => (None, Some(failure.to_string()), false),
    };
    let serving = served.decision.script.as_ref();
    let result = ShadowResult {
        at: served.world.now.unwrap_or_default(),
        location: served.location.clone().unwrap_or_default(),
        session: served.session.clone(),
        event: describe_event(&served.event),
        serving_script: serving.map_or(String::new(), |s| s.name.clone()),
        serving_hash: serving.map_or(String::new(), |s| s.hash.clone()),
        shadow_script: shadow,
        shadow_hash: version.map_or(String::new(), |v| v.hash.clone()),
        serving: served_line(&served.decision),
        shadow: shadow_line,
        fault,
        agreed,
    };
    counters.compared.fetch_add(1, Relaxed);
    match Outcome::of(&result) {
        Outcome::Faulted => &counters.faults,
        Outcome::Agreed => &counters.agreed,
        Outcome::Diverged => &counters.diverged,
    }
    .fetch_add(1, Relaxed);
    result
}

/// How a comparison came out.
enum Outcome {
    Agreed,
    Diverged,
    /// The shadow failed.
    Faulted,
}

impl Outcome {
    fn of(result: &ShadowResult) -> Self {
        match (&result.fault, result.agreed) {
            (Some(_), _) => Outcome::Faulted,
            (None, true) => Outcome::Agreed,
            (None, false) => Outcome::Diverged,
        }
    }
}

/// What the shadow runs have done, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub compared: AtomicU64,
    pub agreed: AtomicU64,
    pub diverged: AtomicU64,
    pub faults: AtomicU64,
}

/// A list of actions on one line, as `script simulate` writes each.
pub fn actions_line(actions: &[Action]) -> String {
    match actions {
        [] => "(no action)".into(),
        _ => actions
            .iter()
            .map(describe_action)
            .collect::<Vec<_>>()
            .join(" · "),
    }
}

/// What the serving script did: its actions, or the host's fallback and why.
fn served_line(decision: &Decision) -> String {
    match &decision.fallback {
        Some(fallback) => format!(
            "(fallback: {}) {}",
            fallback.cause,
            actions_line(&decision.actions)
        ),
        None => actions_line(&decision.actions),
    }
}

/// A script version in a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, PartialOrd, Ord)]
pub struct Version {
    pub script: String,
    pub hash: String,
}

/// How many events, of which how many agreed, diverged, or found the shadow failing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub compared: u64,
    pub agreed: u64,
    pub diverged: u64,
    /// The shadow failed (trapped, ran past its deadline …).
    pub faulted: u64,
}

impl Counts {
    fn add(&mut self, result: &ShadowResult) {
        self.compared += 1;
        match Outcome::of(result) {
            Outcome::Faulted => self.faulted += 1,
            Outcome::Agreed => self.agreed += 1,
            Outcome::Diverged => self.diverged += 1,
        }
    }
}

/// Divergences of one kind: the serving script did this, the shadow would have done that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Divergence {
    pub serving: String,
    pub shadow: String,
    pub count: u64,
    /// Up to [`EXAMPLES`] calls (session ids: `GET /api/cdrs/{id}`).
    pub examples: Vec<String>,
}

/// Shadow failures of one kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub fault: String,
    pub count: u64,
    pub examples: Vec<String>,
}

/// One hour's counts (UTC, the hour's start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hour {
    pub hour: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// The comparison of one (serving version, shadow version) pair: a new version of
/// either starts a new one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    pub serving: Version,
    pub shadow: Version,
    pub first: jiff::Timestamp,
    pub last: jiff::Timestamp,
    #[serde(flatten)]
    pub counts: Counts,
    /// Most frequent first.
    pub divergences: Vec<Divergence>,
    pub faults: Vec<Fault>,
    /// Oldest first.
    pub by_hour: Vec<Hour>,
}

/// Examples kept per divergence or fault.
pub const EXAMPLES: usize = 3;

/// One pair's report while results are added.
struct Building<'a> {
    pair: Pair,
    divergences: BTreeMap<(&'a str, &'a str), Divergence>,
    faults: BTreeMap<&'a str, Fault>,
    hours: BTreeMap<String, Counts>,
}

/// Summarise results (oldest first) by version pair, the newest pair first.
pub fn report(results: &[ShadowResult]) -> Vec<Pair> {
    let mut pairs: BTreeMap<(Version, Version), Building> = BTreeMap::new();
    for result in results {
        let serving = Version {
            script: result.serving_script.clone(),
            hash: result.serving_hash.clone(),
        };
        let shadow = Version {
            script: result.shadow_script.clone(),
            hash: result.shadow_hash.clone(),
        };
        let building = pairs
            .entry((serving.clone(), shadow.clone()))
            .or_insert_with(|| Building {
                pair: Pair {
                    serving,
                    shadow,
                    first: result.at,
                    last: result.at,
                    counts: Counts::default(),
                    divergences: Vec::new(),
                    faults: Vec::new(),
                    by_hour: Vec::new(),
                },
                divergences: BTreeMap::new(),
                faults: BTreeMap::new(),
                hours: BTreeMap::new(),
            });
        let pair = &mut building.pair;
        pair.first = pair.first.min(result.at);
        pair.last = pair.last.max(result.at);
        pair.counts.add(result);
        building
            .hours
            .entry(hour_of(result.at))
            .or_default()
            .add(result);
        let example = |examples: &mut Vec<String>| {
            if examples.len() < EXAMPLES && !examples.contains(&result.session) {
                examples.push(result.session.clone());
            }
        };
        if let Some(fault) = &result.fault {
            let entry = building.faults.entry(fault).or_insert_with(|| Fault {
                fault: fault.clone(),
                count: 0,
                examples: Vec::new(),
            });
            entry.count += 1;
            example(&mut entry.examples);
        } else if !result.agreed {
            let shadow = result.shadow.as_deref().unwrap_or_default();
            let entry = building
                .divergences
                .entry((&result.serving, shadow))
                .or_insert_with(|| Divergence {
                    serving: result.serving.clone(),
                    shadow: shadow.to_owned(),
                    count: 0,
                    examples: Vec::new(),
                });
            entry.count += 1;
            example(&mut entry.examples);
        }
    }
    let mut out: Vec<Pair> = pairs
        .into_values()
        .map(|building| {
            let mut pair = building.pair;
            pair.divergences = building.divergences.into_values().collect();
            pair.divergences.sort_by_key(|d| std::cmp::Reverse(d.count));
            pair.faults = building.faults.into_values().collect();
            pair.faults.sort_by_key(|f| std::cmp::Reverse(f.count));
            pair.by_hour = building
                .hours
                .into_iter()
                .map(|(hour, counts)| Hour { hour, counts })
                .collect();
            pair
        })
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.last));
    out
}

/// The start of `at`'s hour, UTC (`2026-12-06T13:00:00Z`).
fn hour_of(at: jiff::Timestamp) -> String {
    let second = at.as_second();
    jiff::Timestamp::from_second(second - second.rem_euclid(3600))
        .map_or_else(|_| at.to_string(), |hour| hour.to_string())
}

/// A time to the second, for people.
fn to_second(at: jiff::Timestamp) -> jiff::Timestamp {
    at.round(jiff::Unit::Second).unwrap_or(at)
}

/// The report as text, for `wasmpbx shadow report`.
pub fn text(location: &str, pairs: &[Pair]) -> String {
    let mut out = String::new();
    if pairs.is_empty() {
        out.push_str(&format!(
            "{location}: no shadow results (has the location a shadow script, and had it calls?)\n"
        ));
        return out;
    }
    let short = |hash: &str| hash.get(..12).unwrap_or(hash).to_owned();
    for (i, pair) in pairs.iter().enumerate() {
        if i == 1 {
            out.push_str("\nearlier versions:\n");
        }
        let c = &pair.counts;
        let percent = |n: u64| 100.0 * n as f64 / c.compared.max(1) as f64;
        out.push_str(&format!(
            "{location}: serving {} ({}) · shadow {} ({})\n  {} … {}\n",
            pair.serving.script,
            short(&pair.serving.hash),
            pair.shadow.script,
            match pair.shadow.hash.as_str() {
                "" => "not loaded".to_owned(),
                hash => short(hash),
            },
            to_second(pair.first),
            to_second(pair.last)
        ));
        out.push_str(&format!(
            "  compared {}  agreed {} ({:.1} %)  diverged {} ({:.1} %)  shadow faults {}\n",
            c.compared,
            c.agreed,
            percent(c.agreed),
            c.diverged,
            percent(c.diverged),
            c.faulted
        ));
        if !pair.divergences.is_empty() {
            out.push_str("  divergences (serving → shadow):\n");
        }
        for d in &pair.divergences {
            out.push_str(&format!(
                "    {:>6}×  {}\n         →  {}\n            e.g. {}\n",
                d.count,
                d.serving,
                d.shadow,
                d.examples.join(", ")
            ));
        }
        if !pair.faults.is_empty() {
            out.push_str("  shadow faults:\n");
        }
        for f in &pair.faults {
            out.push_str(&format!(
                "    {:>6}×  {}\n            e.g. {}\n",
                f.count,
                f.fault,
                f.examples.join(", ")
            ));
        }
        out.push_str("  by hour (UTC):\n");
        for h in &pair.by_hour {
            out.push_str(&format!(
                "    {}  compared {}  agreed {}  diverged {}  faults {}\n",
                h.hour, h.counts.compared, h.counts.agreed, h.counts.diverged, h.counts.faulted
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn result(
        s: i64,
        shadow_hash: &str,
        shadow: Option<&str>,
        fault: Option<&str>,
    ) -> ShadowResult {
        let serving = "set-tag mode=listen · forward number +61290000098 ring 120000 ms";
        ShadowResult {
            at: jiff::Timestamp::from_second(1_796_000_000 + s).unwrap(),
            location: "sydney".into(),
            session: format!("s{s}"),
            event: "incoming".into(),
            serving_script: "listen".into(),
            serving_hash: "aaaa".into(),
            shadow_script: "front-door".into(),
            shadow_hash: shadow_hash.into(),
            serving: serving.into(),
            shadow: shadow.map(Into::into),
            fault: fault.map(Into::into),
            agreed: shadow == Some(serving),
        }
    }

    #[test]
    fn the_report_groups_by_version_pair_divergence_fault_and_hour() {
        let same = Some("set-tag mode=listen · forward number +61290000098 ring 120000 ms");
        let menu = Some("set-tag hours=open · answer · play welcome");
        let results = [
            result(0, "b1", menu, None),
            result(10, "b1", menu, None),
            result(20, "b1", same, None),
            result(30, "b1", None, Some("trapped: told to trap")),
            result(40, "b1", menu, None),
            result(3600, "b1", menu, None),
            // A new shadow version starts a pair of its own.
            result(4000, "b2", same, None),
        ];
        let pairs = report(&results);
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].shadow.hash, "b2", "the newest pair first");
        assert_eq!(
            pairs[0].counts,
            Counts {
                compared: 1,
                agreed: 1,
                diverged: 0,
                faulted: 0
            }
        );
        let old = &pairs[1];
        assert_eq!(
            old.counts,
            Counts {
                compared: 6,
                agreed: 1,
                diverged: 4,
                faulted: 1
            }
        );
        assert_eq!(old.divergences.len(), 1);
        assert_eq!(old.divergences[0].count, 4);
        assert_eq!(old.divergences[0].examples, ["s0", "s10", "s40"]);
        assert_eq!(old.faults[0].fault, "trapped: told to trap");
        assert_eq!(old.faults[0].examples, ["s30"]);
        let hours: Vec<(&str, u64)> = old
            .by_hour
            .iter()
            .map(|h| (h.hour.as_str(), h.counts.compared))
            .collect();
        assert_eq!(
            hours,
            [("2026-11-30T00:00:00Z", 5), ("2026-11-30T01:00:00Z", 1)]
        );
        let text = text("sydney", &pairs);
        assert!(
            text.contains("compared 6  agreed 1 (16.7 %)  diverged 4 (66.7 %)  shadow faults 1"),
            "{text}"
        );
        assert!(text.contains("earlier versions:"), "{text}");
    }

    #[test]
    fn the_apis_choice_wins_over_the_config_and_survives_a_restart() {
        let kv: Arc<dyn KvStore> = Arc::new(MemoryStore::new());
        let location = |shadow: Option<&str>| Location {
            name: "sydney".into(),
            flip_number: "+61290000001".into(),
            script: "listen".into(),
            shadow: shadow.map(Into::into),
            fallback_number: "+61290000099".into(),
            trunk: None,
            stream_url: None,
            vars: Default::default(),
        };
        let choices = Choices::load(kv.clone()).unwrap();
        assert_eq!(
            choices.of(&location(Some("front-door"))).as_deref(),
            Some("front-door")
        );
        choices.choose("sydney", Choice::Off).unwrap();
        assert_eq!(choices.of(&location(Some("front-door"))), None);
        choices
            .choose("sydney", Choice::Script("next".into()))
            .unwrap();
        let restarted = Choices::load(kv.clone()).unwrap();
        assert_eq!(restarted.of(&location(None)).as_deref(), Some("next"));
        restarted.choose("sydney", Choice::Reset).unwrap();
        assert_eq!(
            restarted.of(&location(Some("front-door"))).as_deref(),
            Some("front-door")
        );
        assert_eq!(Choices::load(kv).unwrap().of(&location(None)), None);
    }
}
