//! Users' registered devices, as scripts and flip decisions see them.
//!
//! The registrar is the source of truth; this trait is the narrow view the script
//! imports need, so scripts can be run (and simulated) without a SIP stack.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::Serialize;

/// One registered device of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// Unique per user: the configured name, else the User-Agent.
    pub name: String,
    pub user_id: String,
    pub user_agent: Option<String>,
    /// "udp", "tcp" or "ws".
    pub transport: String,
}

/// Where the registered devices of users can be looked up.
pub trait DeviceDirectory: Send + Sync {
    fn devices(&self, user_id: &str) -> Vec<DeviceInfo>;
}

/// A directory held in memory: the registrar's live view, or the devices given to
/// `script simulate --device`.
#[derive(Default)]
pub struct MemoryDirectory {
    by_user: RwLock<BTreeMap<String, Vec<DeviceInfo>>>,
}

impl MemoryDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add or replace a device (by user and name).
    pub fn upsert(&self, device: DeviceInfo) {
        let mut map = self.by_user.write().unwrap_or_else(|p| p.into_inner());
        let list = map.entry(device.user_id.clone()).or_default();
        list.retain(|d| d.name != device.name);
        list.push(device);
    }
}

impl MemoryDirectory {
    /// Replace every user's devices at once (the registrar's view after a change).
    pub fn replace_all(&self, by_user: impl IntoIterator<Item = (String, Vec<DeviceInfo>)>) {
        let mut map = self.by_user.write().unwrap_or_else(|p| p.into_inner());
        *map = by_user.into_iter().collect();
    }
}

impl DeviceDirectory for MemoryDirectory {
    fn devices(&self, user_id: &str) -> Vec<DeviceInfo> {
        let map = self.by_user.read().unwrap_or_else(|p| p.into_inner());
        map.get(user_id).cloned().unwrap_or_default()
    }
}
