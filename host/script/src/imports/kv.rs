use crate::bindings::v0_2::wasmpbx::script::kv::Host;
use crate::engine::EventHost;

impl Host for EventHost {
    fn get(&mut self, key: String) -> Option<String> {
        let scope = self.location.as_deref()?;
        match self.services.kv.get(scope, &key) {
            Ok(value) => value,
            Err(e) => {
                // A failing store reads as "unset": the script's default applies.
                tracing::warn!(script = &*self.script, key, "kv.get failed: {e}");
                None
            }
        }
    }

    fn set(&mut self, key: String, value: String) -> Result<(), String> {
        let scope = self
            .location
            .as_deref()
            .ok_or("no location in scope for kv.set")?;
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
        self.services
            .kv
            .delete(scope, &key)
            .map_err(|e| e.to_string())
    }
}
