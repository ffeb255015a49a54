//! Cranelift's incremental compilation cache, on disk: one file per compiled function,
//! named by the SHA-256 of Cranelift's key for it (the function's code and the compiler's
//! settings). A JavaScript or Python guest is mostly its language engine; a new version
//! of the script with one changed line has the same engine functions, which come from
//! here instead of being compiled again.

use std::borrow::Cow;
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};
use wasmtime::CacheStore;

#[derive(Debug)]
pub(crate) struct FunctionCache {
    dir: PathBuf,
}

impl FunctionCache {
    pub(crate) fn new(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// `dir/ab/abcdef…`: 256 folders, so none holds tens of thousands of files.
    fn path(&self, key: &[u8]) -> PathBuf {
        let name: String = Sha256::digest(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(&name[..2]).join(name)
    }
}

impl CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        std::fs::read(self.path(key)).ok().map(Cow::Owned)
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let path = self.path(key);
        // Written aside and renamed, so a reader (another thread, another process) never
        // sees half an entry.
        let temp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = path
            .parent()
            .is_some_and(|dir| std::fs::create_dir_all(dir).is_ok())
            && std::fs::write(&temp, value).is_ok()
            && std::fs::rename(&temp, &path).is_ok();
        if !written {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }
}
