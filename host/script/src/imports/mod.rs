//! The host side of each WIT import, one file per interface, all implemented on
//! [`EventHost`](super::engine::EventHost): the view one event has of the host.

mod clock;
mod config;
mod directory;
mod kv;
mod log;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::engine::{Answer, EventHost};

impl EventHost {
    /// What `import(arg)` answered before in this event's world (a shadow run, a
    /// replay), else what `live` answers now, noted in the world.
    fn answer<T: Serialize + DeserializeOwned>(
        &mut self,
        import: &str,
        arg: &str,
        live: impl FnOnce(&Self) -> T,
    ) -> T {
        let recorded = self
            .world
            .answers
            .iter()
            .find(|a| a.import == import && a.arg == arg)
            .and_then(|a| serde_json::from_value(a.value.clone()).ok());
        if let Some(value) = recorded {
            return value;
        }
        let value = live(self);
        let room = self.world.answers.len() < crate::engine::ANSWERS_KEPT
            && arg.len() <= crate::engine::ARG_KEPT_BYTES;
        if room && let Ok(json) = serde_json::to_value(&value) {
            self.world.answers.push(Answer {
                import: import.to_owned(),
                arg: arg.to_owned(),
                value: json,
            });
        }
        value
    }
}
