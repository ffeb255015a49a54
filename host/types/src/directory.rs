//! Users' registered devices, as scripts and flip decisions see them.
//!
//! The registrar is the source of truth; this trait is the narrow view the script
//! imports need, so scripts can be run (and simulated) without a SIP stack.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::Serialize;

/// One registered device of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    /// Unique per user: the configured name, else the User-Agent.
    pub name: String,
    pub user_id: String,
    pub user_agent: Option<String>,
    /// "udp", "tcp", "tls" or "ws".
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

    /// Replace one user's devices (none: the user leaves the directory).
    pub fn replace_user(&self, user_id: &str, devices: Vec<DeviceInfo>) {
        let mut map = self.by_user.write().unwrap_or_else(|p| p.into_inner());
        if devices.is_empty() {
            map.remove(user_id);
        } else {
            map.insert(user_id.to_owned(), devices);
        }
    }
}

impl DeviceDirectory for MemoryDirectory {
    fn devices(&self, user_id: &str) -> Vec<DeviceInfo> {
        let map = self.by_user.read().unwrap_or_else(|p| p.into_inner());
        map.get(user_id).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(user_id: &str, name: &str) -> DeviceInfo {
        DeviceInfo {
            name: name.into(),
            user_id: user_id.into(),
            user_agent: None,
            transport: "tls".into(),
        }
    }

    #[test]
    fn one_users_devices_are_replaced_and_the_others_kept() {
        let directory = MemoryDirectory::new();
        directory.replace_all([
            ("alice".to_owned(), vec![device("alice", "desk")]),
            ("bob".to_owned(), vec![device("bob", "desk")]),
        ]);
        directory.replace_user("alice", vec![device("alice", "mobile")]);
        assert_eq!(directory.devices("alice"), [device("alice", "mobile")]);
        assert_eq!(directory.devices("bob"), [device("bob", "desk")]);
        directory.replace_user("bob", Vec::new());
        assert!(directory.devices("bob").is_empty());
    }
}
