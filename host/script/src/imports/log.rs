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
        // The call is named by the span the host runs the event in (`call{session}`).
        let script = &*self.script;
        // A shadow script's lines are about calls it does not serve: debug only.
        if self.world.shadow {
            return tracing::debug!(script, shadow = true, "{message}");
        }
        match level {
            Level::Trace => tracing::trace!(script, "{message}"),
            Level::Debug => tracing::debug!(script, "{message}"),
            Level::Info => tracing::info!(script, "{message}"),
            Level::Warn => tracing::warn!(script, "{message}"),
            Level::Error => tracing::error!(script, "{message}"),
        }
    }
}
