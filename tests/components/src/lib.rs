//! Paths of the guests built for tests: the default scripts and the misbehaving ones.
//! Built by `build.rs`, never committed.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// Read a guest's bytes.
pub fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}
