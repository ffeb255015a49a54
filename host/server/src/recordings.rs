//! Call recordings after the call: `GET /api/recordings/{id}` serves a call's recording
//! (range requests, so a player can seek), and `[media] recordings_retention_days` has
//! old ones deleted.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often old recordings are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The recording file of a record (its `recording`), if it is in `dir`: a path in a
/// record is the host's own, but a file outside the recordings folder is never served.
pub fn file_of(record: &serde_json::Value, dir: &Path) -> Option<PathBuf> {
    let path = PathBuf::from(record["recording"].as_str()?);
    let file = std::fs::canonicalize(&path).ok()?;
    let dir = std::fs::canonicalize(dir).ok()?;
    file.starts_with(&dir).then_some(file)
}

/// Delete the `.wav` files in `dir` last written before `now - keep`; the ones deleted.
pub fn prune(dir: &Path, keep: Duration, now: SystemTime) -> std::io::Result<Vec<PathBuf>> {
    let Some(cutoff) = now.checked_sub(keep) else {
        return Ok(Vec::new());
    };
    let mut deleted = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "wav") {
            continue;
        }
        let modified = std::fs::metadata(&path).and_then(|m| m.modified());
        if modified.is_ok_and(|m| m < cutoff) && std::fs::remove_file(&path).is_ok() {
            deleted.push(path);
        }
    }
    Ok(deleted)
}

/// Every hour, delete recordings older than `days` (from the start, then hourly).
pub async fn keep_for(dir: PathBuf, days: u32) {
    let keep = Duration::from_secs(u64::from(days) * 86_400);
    let mut every = tokio::time::interval(PRUNE_EVERY);
    loop {
        every.tick().await;
        let dir = dir.clone();
        #[allow(clippy::disallowed_methods)] // the wall clock, at the edge
        let now = SystemTime::now();
        let pruned = tokio::task::spawn_blocking(move || prune(&dir, keep, now)).await;
        match pruned {
            Ok(Ok(deleted)) if !deleted.is_empty() => tracing::info!(
                count = deleted.len(),
                "deleted recordings older than {days} days (media.recordings_retention_days)"
            ),
            Ok(Ok(_)) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(Err(e)) => tracing::warn!("media.recordings: cannot prune: {e}"),
            Err(e) => tracing::warn!("media.recordings: pruning stopped: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_recordings_older_than_the_retention_go() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let day = Duration::from_secs(86_400);
        for (name, age) in [("old.wav", 31), ("recent.wav", 29), ("old.txt", 31)] {
            let file = std::fs::File::create(dir.path().join(name)).unwrap();
            file.set_modified(now - day * age).unwrap();
        }
        let deleted = prune(dir.path(), day * 30, now).unwrap();
        assert_eq!(deleted, [dir.path().join("old.wav")]);
        assert!(dir.path().join("recent.wav").exists());
        assert!(dir.path().join("old.txt").exists(), "only recordings");
    }

    #[test]
    fn a_record_names_a_file_only_inside_the_recordings_folder() {
        let dir = tempfile::tempdir().unwrap();
        let recordings = dir.path().join("recordings");
        std::fs::create_dir(&recordings).unwrap();
        let inside = recordings.join("call.wav");
        std::fs::write(&inside, b"RIFF").unwrap();
        let outside = dir.path().join("secret.wav");
        std::fs::write(&outside, b"RIFF").unwrap();
        let record = |path: &Path| serde_json::json!({ "recording": path });
        assert!(file_of(&record(&inside), &recordings).is_some());
        assert_eq!(file_of(&record(&outside), &recordings), None);
        let sneaky = recordings.join("../secret.wav");
        assert_eq!(file_of(&record(&sneaky), &recordings), None);
        assert_eq!(file_of(&serde_json::json!({}), &recordings), None);
    }
}
