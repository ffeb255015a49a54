//! The script version a call is pinned to, as the call engine holds it: opaque, so the
//! engine never sees the runtime's types. The script runtime makes it and is the only
//! one to look inside.

use std::any::Any;
use std::sync::Arc;

/// A loaded script version, shared by every call that started on it.
#[derive(Clone)]
pub struct ScriptVersion(Arc<dyn Any + Send + Sync>);

impl ScriptVersion {
    pub fn new<T: Any + Send + Sync>(version: Arc<T>) -> Self {
        Self(version)
    }

    /// The runtime's own type, if it made this handle.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.0.clone().downcast().ok()
    }
}

impl std::fmt::Debug for ScriptVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptVersion")
    }
}
