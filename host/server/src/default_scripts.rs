//! The default scripts (`listen`, `front-door`, `flip-policy`), carried in the binary so
//! a copied or installed `wasmpbx` runs on its own: on the first run, when the scripts
//! folder does not exist yet, it is created with them. An existing folder is the
//! admin's, even when empty, and is never written to.

use std::io;
use std::path::Path;

/// (name, component bytes): built from `scripts/` by `build.rs`.
pub const DEFAULT_SCRIPTS: [(&str, &[u8]); 3] =
    include!(concat!(env!("OUT_DIR"), "/default_scripts.rs"));

/// Create `dir` with the default scripts unless it exists; the names written, if any.
/// Each file is written under a hidden name and renamed into place, so nothing ever
/// reads half a script.
pub fn install_if_missing(dir: &Path) -> io::Result<Vec<&'static str>> {
    if dir.exists() {
        return Ok(Vec::new());
    }
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in DEFAULT_SCRIPTS {
        let partial = dir.join(format!(".{name}.wasm.partial"));
        std::fs::write(&partial, bytes)?;
        std::fs::rename(&partial, dir.join(format!("{name}.wasm")))?;
    }
    Ok(DEFAULT_SCRIPTS.iter().map(|(name, _)| *name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_folder_gets_the_default_scripts() {
        let dir = tempfile::tempdir().unwrap();
        let scripts = dir.path().join("deep").join("scripts");
        let written = install_if_missing(&scripts).unwrap();
        assert_eq!(written, ["listen", "front-door", "flip-policy"]);
        for (name, bytes) in DEFAULT_SCRIPTS {
            assert_eq!(
                std::fs::read(scripts.join(format!("{name}.wasm"))).unwrap(),
                bytes
            );
        }
        let names: Vec<_> = std::fs::read_dir(&scripts).unwrap().collect();
        assert_eq!(names.len(), 3, "no partial files left");
    }

    #[test]
    fn an_existing_folder_is_left_alone_even_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(install_if_missing(dir.path()).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_embedded_scripts_are_the_built_components() {
        for (name, bytes) in DEFAULT_SCRIPTS {
            // A component's preamble: \0asm, version 0x0d, layer 1.
            assert_eq!(&bytes[..8], b"\0asm\x0d\0\x01\0", "{name}");
        }
    }
}
