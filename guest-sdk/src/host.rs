//! The host's imports, as plain functions.

use crate::__bindings::host::wasmpbx::script as wit;
use crate::{Device, Instant, LocalTime, User};

pub use wit::log::Level;

/// Write a line to the host's log (tagged with the script and the call).
pub fn log(level: Level, message: &str) {
    wit::log::write(level, message);
}

pub fn info(message: &str) {
    log(Level::Info, message);
}

pub fn warn(message: &str) {
    log(Level::Warn, message);
}

pub fn error(message: &str) {
    log(Level::Error, message);
}

/// The current time (the `--at` time under `wasmpbx script simulate`).
pub fn now() -> Instant {
    wit::clock::now()
}

/// The wall-clock time now in an IANA timezone such as "Australia/Sydney".
pub fn local_now(timezone: &str) -> Result<LocalTime, String> {
    wit::clock::to_local(wit::clock::now(), timezone)
}

/// A var of the current location (`[locations.vars]` in the config).
pub fn var(name: &str) -> Option<String> {
    wit::config::location_var(name)
}

/// A var of the current location, treating an empty value as unset.
pub fn non_empty_var(name: &str) -> Option<String> {
    var(name).filter(|v| !v.trim().is_empty())
}

/// All vars of the current location.
pub fn vars() -> Vec<(String, String)> {
    wit::config::location_vars()
}

/// A host setting by dotted key, e.g. "flip.pin_devices".
pub fn setting(key: &str) -> Option<String> {
    wit::config::setting(key)
}

/// A user by id.
pub fn user(id: &str) -> Option<User> {
    wit::directory::find_user(id)
}

/// A user by extension.
pub fn user_by_extension(extension: &str) -> Option<User> {
    wit::directory::find_user_by_extension(extension)
}

/// A user's registered devices.
pub fn devices(user_id: &str) -> Vec<Device> {
    wit::directory::user_devices(user_id)
}

/// The location's key-value store (admin toggles such as night mode).
pub mod kv {
    use super::wit;

    pub fn get(key: &str) -> Option<String> {
        wit::kv::get(key)
    }

    pub fn set(key: &str, value: &str) -> Result<(), String> {
        wit::kv::set(key, value)
    }

    pub fn delete(key: &str) -> Result<(), String> {
        wit::kv::delete(key)
    }
}
