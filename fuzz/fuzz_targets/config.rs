//! A config file as an admin might write it: parsed and validated (errors are one line),
//! and compared with itself as a reload would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmpbx_types::config::{self, Config};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, std::path::Path::new("fuzz.toml")) {
        Ok(parsed) => {
            let (_, changes) = config::reload(&parsed, parsed.clone());
            assert!(
                changes.is_empty(),
                "a config is its own reload: {changes:?}"
            );
            for location in &parsed.locations {
                assert!(
                    parsed
                        .location_by_flip_number(&location.flip_number)
                        .is_some()
                );
            }
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "one line: {e}"),
    }
});
