use crate::bindings::v0_2::wasmpbx::script::log::{Host, Level};
use crate::engine::EventHost;

/// Longest log line a script may write; the rest is cut.
const MAX_LINE: usize = 1024;

impl Host for EventHost {
    fn write(&mut self, level: Level, message: String) {
        let message = match message.char_indices().nth(MAX_LINE) {
            Some((cut, _)) => &message[..cut],
            None => message.as_str(),
        };
        // The same `session` field as the host's lines about the call.
        let (script, session) = (
            &*self.script,
            self.call_id.as_deref().map_or("-", crate::session_field),
        );
        // A shadow script's lines are about calls it does not serve: debug only.
        if self.world.shadow {
            return tracing::debug!(script, session, shadow = true, "{message}");
        }
        match level {
            Level::Trace => tracing::trace!(script, session, "{message}"),
            Level::Debug => tracing::debug!(script, session, "{message}"),
            Level::Info => tracing::info!(script, session, "{message}"),
            Level::Warn => tracing::warn!(script, session, "{message}"),
            Level::Error => tracing::error!(script, session, "{message}"),
        }
    }
}
