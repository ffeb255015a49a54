use crate::bindings::v0_2::wasmpbx::script::kv::Host;
use crate::engine::{EventHost, EventWorld};

impl Host for EventHost {
    /// What the event read before (a shadow run sees the live event's readings), else
    /// the store; either way noted in the event's world.
    fn get(&mut self, key: String) -> Option<String> {
        let scope = self.location.as_deref()?;
        if key.is_empty() || key.len() > wasmpbx_types::store::MAX_KEY_BYTES {
            return None; // no such key can be set: nothing to read or keep
        }
        let known = |entries: &[(String, Option<String>)]| {
            entries
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.clone())
        };
        if let Some(value) = known(&self.world.written).or_else(|| known(&self.world.kv)) {
            return value;
        }
        let value = match self.services.kv.get(scope, &key) {
            Ok(value) => value,
            Err(e) => {
                // A failing store reads as "unset": the script's default applies.
                tracing::warn!(script = &*self.script, key, "kv.get failed: {e}");
                None
            }
        };
        if self.world.kv.len() < crate::engine::ANSWERS_KEPT {
            self.world.kv.push((key, value.clone()));
        }
        value
    }

    fn set(&mut self, key: String, value: String) -> Result<(), String> {
        let scope = self
            .location
            .as_deref()
            .ok_or("no location in scope for kv.set")?;
        // What the event reads back is what it wrote, written or not.
        remember(&mut self.world, &key, Some(value.clone()));
        if self.world.shadow {
            return Ok(());
        }
        self.services
            .kv
            .set(scope, &key, &value)
            .map_err(|e| e.to_string())
    }

    fn delete(&mut self, key: String) -> Result<(), String> {
        let scope = self
            .location
            .as_deref()
            .ok_or("no location in scope for kv.delete")?;
        remember(&mut self.world, &key, None);
        if self.world.shadow {
            return Ok(());
        }
        self.services
            .kv
            .delete(scope, &key)
            .map_err(|e| e.to_string())
    }
}

/// Note a value the event wrote, so that its later reads see it.
fn remember(world: &mut EventWorld, key: &str, value: Option<String>) {
    match world.written.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value,
        None => world.written.push((key.to_owned(), value)),
    }
}
