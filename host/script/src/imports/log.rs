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
        let (script, call) = (&*self.script, self.call_id.as_deref().unwrap_or("-"));
        match level {
            Level::Trace => tracing::trace!(script, call, "{message}"),
            Level::Debug => tracing::debug!(script, call, "{message}"),
            Level::Info => tracing::info!(script, call, "{message}"),
            Level::Warn => tracing::warn!(script, call, "{message}"),
            Level::Error => tracing::error!(script, call, "{message}"),
        }
    }
}
