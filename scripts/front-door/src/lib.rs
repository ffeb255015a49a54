//! `front-door` — active mode: time conditions, a welcome, a menu, and departments.
//!
//! Location vars: `timezone` (IANA), `hours`, `holidays`, `sales`, `billing`, `operator`,
//! optional `after_hours_number`, `menu_timeout_ms` (how long the menu waits for a key,
//! default 5000) and `record` (`true` records every call). Key-value entries (set live
//! through the admin API): `override` (`open`/`closed`), and `hours` / `holidays`, which
//! win over the vars of the same name.
//!
//! Open: welcome, then the menu (1 sales, 2 billing, 0 operator); an invalid or missing
//! choice repeats the menu once, then goes to the operator. Closed: the closed prompt,
//! then `after_hours_number` or goodbye. A failed forward goes to the location's
//! fallback number. An engine's `intent` naming a department (`sales`, `billing`,
//! `operator`) that has a number sends the caller there during the welcome or the menu,
//! without a key; any other intent changes nothing and the menu goes on.

use wasmpbx_guest::schedule::Schedule;
use wasmpbx_guest::{
    Action, Call, CallContextExt, ExternalEvent, ForwardFailure, ForwardTarget, Gathered, Router,
    host,
};

const RING_TIMEOUT_MS: u32 = 30_000;
const MENU_TIMEOUT_MS: u32 = 5_000;

struct FrontDoor;

/// The menu: key, department (a location var and a tag value).
const MENU: [(&str, &str); 3] = [("1", "sales"), ("2", "billing"), ("0", "operator")];

impl Router for FrontDoor {
    fn incoming(_call: &Call) -> Vec<Action> {
        let timezone = host::non_empty_var("timezone").unwrap_or_else(|| "UTC".into());
        let schedule = match Schedule::parse(
            &live_setting("hours").unwrap_or_default(),
            &live_setting("holidays").unwrap_or_default(),
        ) {
            Ok(schedule) => schedule,
            Err(e) => {
                host::error(&format!("front-door: {e}"));
                return Vec::new(); // the host falls back
            }
        };
        let now = match host::local_now(&timezone) {
            Ok(now) => now,
            Err(e) => {
                host::error(&format!("front-door: timezone var: {e}"));
                return Vec::new();
            }
        };
        let state = schedule.state(&now, host::kv::get("override").as_deref());
        let mut actions = vec![Action::tag("hours", state.as_str())];
        if host::var("record").as_deref() == Some("true") {
            actions.push(Action::Recording(true));
        }
        if state.is_open() {
            actions.extend([Action::Answer, Action::play("welcome"), menu()]);
        } else {
            actions.push(Action::play("closed"));
            match host::non_empty_var("after_hours_number") {
                Some(number) => {
                    actions.push(Action::tag("department", "after-hours"));
                    actions.push(Action::forward_to_number(number, RING_TIMEOUT_MS));
                }
                None => actions.extend([Action::play("goodbye"), Action::Hangup]),
            }
        }
        actions
    }

    fn digits_gathered(call: &Call, gathered: &Gathered) -> Vec<Action> {
        if let Some((_, department)) = MENU.iter().find(|(key, _)| *key == gathered.digits) {
            return transfer(department);
        }
        if call.tag("menu_repeated").is_none() {
            let mut actions = vec![Action::tag("menu_repeated", "true")];
            if !gathered.digits.is_empty() {
                actions.push(Action::play("invalid-choice"));
            }
            actions.push(menu());
            return actions;
        }
        transfer("operator")
    }

    fn external(call: &Call, event: &ExternalEvent) -> Vec<Action> {
        // Only while open and before the caller has been sent anywhere.
        if event.name != "intent"
            || call.tag("hours") != Some("open")
            || call.tag("department").is_some()
        {
            return Vec::new();
        }
        let Some((_, department)) = MENU.iter().find(|(_, d)| *d == event.value) else {
            return Vec::new();
        };
        match host::non_empty_var(department) {
            Some(number) => vec![
                Action::tag("department", *department),
                Action::tag("routed_by", "intent"),
                Action::play("transferring"),
                Action::forward_to_number(number, RING_TIMEOUT_MS),
            ],
            None => Vec::new(),
        }
    }

    fn forward_failed(call: &Call, failure: &ForwardFailure) -> Vec<Action> {
        host::warn(&format!(
            "front-door: forward failed with {} {}",
            failure.status, failure.reason
        ));
        if matches!(failure.target, ForwardTarget::Fallback)
            || call.tag("department") == Some("fallback")
        {
            return vec![Action::play("goodbye"), Action::Hangup];
        }
        vec![
            Action::tag("department", "fallback"),
            Action::forward_to_fallback(RING_TIMEOUT_MS),
        ]
    }
}

/// `hours` and `holidays` from the key-value store if an admin set them there (they
/// apply from the next call, no restart), else from the location's vars.
fn live_setting(name: &str) -> Option<String> {
    host::kv::get(name).or_else(|| host::var(name))
}

fn menu() -> Action {
    let timeout = host::var("menu_timeout_ms")
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(MENU_TIMEOUT_MS);
    Action::gather(1, timeout, Some("menu"))
}

/// Send the caller to a department's number, or the operator's if it has none.
fn transfer(department: &str) -> Vec<Action> {
    let (department, number) = match host::non_empty_var(department) {
        Some(number) => (department, number),
        None => match host::non_empty_var("operator") {
            Some(number) => ("operator", number),
            None => {
                host::error(&format!("front-door: no {department} or operator var"));
                return vec![
                    Action::tag("department", "fallback"),
                    Action::forward_to_fallback(RING_TIMEOUT_MS),
                ];
            }
        },
    };
    vec![
        Action::tag("department", department),
        Action::play("transferring"),
        Action::forward_to_number(number, RING_TIMEOUT_MS),
    ]
}

wasmpbx_guest::export_router!(FrontDoor);
