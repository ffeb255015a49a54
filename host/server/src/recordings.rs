//! Call recordings after the call: `GET /api/recordings/{id}` serves a call's recording
//! (range requests, so a player can seek), and `[media] recordings_retention_days` has
//! old ones deleted.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often old recordings are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// A recording is written as `NAME.part` and renamed when finished (moments after its
/// call's end); how long a request for it waits for that.
pub const FINISHING: Duration = Duration::from_secs(2);

/// The recording file of a record (its `recording`), if it is in `dir`: a path in a
/// record is the host's own, but a file outside the recordings folder is never served.
pub fn file_of(record: &serde_json::Value, dir: &Path) -> Option<PathBuf> {
    let path = PathBuf::from(record["recording"].as_str()?);
    let file = std::fs::canonicalize(&path).ok()?;
    let dir = std::fs::canonicalize(dir).ok()?;
    file.starts_with(&dir).then_some(file)
}

/// Where a record's recording is, once it is finished: while it is still being written
/// (its call has just ended), wait for it up to `wait`. `Err(true)`: still being
/// written; `Err(false)`: not there (or outside `dir`).
pub async fn finished_file_of(
    record: &serde_json::Value,
    dir: &Path,
    wait: Duration,
) -> Result<PathBuf, bool> {
    let being_written = || {
        record["recording"]
            .as_str()
            .is_some_and(|path| Path::new(&format!("{path}.part")).exists())
    };
    let finished = async {
        loop {
            if let Some(file) = file_of(record, dir) {
                return Ok(file);
            }
            if !being_written() {
                return Err(false);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(wait, finished)
        .await
        .unwrap_or(Err(true))
}

/// Delete the recordings in `dir` (`.wav`, and `.wav.part` a crash left unfinished) last
/// written before `now - keep`; the ones deleted.
pub fn prune(dir: &Path, keep: Duration, now: SystemTime) -> std::io::Result<Vec<PathBuf>> {
    let Some(cutoff) = now.checked_sub(keep) else {
        return Ok(Vec::new());
    };
    let mut deleted = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !name.ends_with(".wav") && !name.ends_with(".wav.part") {
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
        for (name, age) in [
            ("old.wav", 31),
            ("recent.wav", 29),
            ("old.txt", 31),
            ("crashed.wav.part", 31),
        ] {
            let file = std::fs::File::create(dir.path().join(name)).unwrap();
            file.set_modified(now - day * age).unwrap();
        }
        let mut deleted = prune(dir.path(), day * 30, now).unwrap();
        deleted.sort();
        assert_eq!(
            deleted,
            [
                dir.path().join("crashed.wav.part"),
                dir.path().join("old.wav")
            ]
        );
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

    #[tokio::test]
    async fn a_recording_being_finished_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("call.wav");
        let part = dir.path().join("call.wav.part");
        let record = serde_json::json!({ "recording": path });
        let wait = Duration::from_secs(5);
        std::fs::write(&part, b"RIFF").unwrap();
        let (finished, _) = tokio::join!(finished_file_of(&record, dir.path(), wait), async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            std::fs::rename(&part, &path).unwrap();
        });
        assert_eq!(finished, Ok(std::fs::canonicalize(&path).unwrap()));
        // Gone, and never being written: at once; still being written: after the wait.
        let gone = serde_json::json!({ "recording": dir.path().join("gone.wav") });
        assert_eq!(finished_file_of(&gone, dir.path(), wait).await, Err(false));
        std::fs::write(dir.path().join("stuck.wav.part"), b"RIFF").unwrap();
        let stuck = serde_json::json!({ "recording": dir.path().join("stuck.wav") });
        let short = Duration::from_millis(50);
        assert_eq!(finished_file_of(&stuck, dir.path(), short).await, Err(true));
    }
}
