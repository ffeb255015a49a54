//! How `wasmpbx cdr list` prints call records (the JSON the store and the API give): an
//! aligned table, each call's flips on the lines under it, or CSV; and how `wasmpbx audit
//! list` prints the audit log the same ways.

use serde_json::Value;

use crate::store::AuditEntry;

/// The table's columns.
const HEADER: [&str; 9] = [
    "TIME",
    "SESSION",
    "CALLER",
    "DIALED",
    "LOCATION",
    "DURATION",
    "DISPOSITION",
    "FLIPS",
    "NOTES",
];

/// One record's cells, in [`HEADER`]'s order.
fn cells(record: &Value) -> [String; 9] {
    let text = |key: &str| record[key].as_str().unwrap_or("").to_owned();
    let session = text("session");
    // Logs name a call by the last 12 characters of its id.
    let short = session
        .get(session.len().saturating_sub(12)..)
        .unwrap_or(&session)
        .to_owned();
    let mut disposition = text("disposition");
    // A call still going on, or one a crash interrupted, says so.
    if let Some(state) = record["state"].as_str().filter(|s| *s != "ended") {
        disposition.push_str(&format!(" ({state})"));
    }
    let mut notes: Vec<String> = Vec::new();
    if let Some(script) = record["script"].as_str() {
        notes.push(format!("script {script}"));
    }
    if record["fallback"] == true {
        notes.push("fallback".into());
    }
    // The script's tags say what it chose (`department=billing`, `hours=open` …).
    notes.extend(
        record["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| Some(format!("{}={}", t[0].as_str()?, t[1].as_str()?))),
    );
    if let Some(digits) = record["digits"].as_str().filter(|d| !d.is_empty()) {
        notes.push(format!("digits {digits}"));
    }
    if let Some(path) = record["recording"].as_str() {
        notes.push(format!("recording {path}"));
    }
    for stream in record["streams"].as_array().into_iter().flatten() {
        notes.push(format!(
            "stream {} ({} frames, {} dropped)",
            stream["url"].as_str().unwrap_or(""),
            stream["frames"],
            stream["dropped"]
        ));
    }
    [
        // Whole seconds, without the date's "T".
        text("started_at").replacen('T', " ", 1),
        short,
        text("caller"),
        text("dialed"),
        text("location"),
        duration(record["duration_ms"].as_u64().unwrap_or(0)),
        disposition,
        record["flips"].as_array().map_or(0, Vec::len).to_string(),
        notes.join("  "),
    ]
}

/// `h:mm:ss`.
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// A call's flips, one line each: what, how, from where to where, when, and the outcome.
fn flip_lines(record: &Value) -> Vec<String> {
    let flips = record["flips"].as_array().into_iter().flatten();
    flips
        .map(|f| {
            let text = |key: &str| f[key].as_str().unwrap_or("").to_owned();
            let targets: Vec<&str> = f["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let mut line = format!(
                "    flip {} ({}) {} -> {} at {}: {}",
                text("kind"),
                text("trigger"),
                text("from_device"),
                targets.join(", "),
                text("requested_at"),
                text("result")
            );
            if let Some(reason) = f["reason"].as_str() {
                line.push_str(&format!(" ({reason})"));
            }
            line
        })
        .collect()
}

/// The records as an aligned table, newest first as given.
pub fn table(records: &[Value]) -> String {
    let rows: Vec<Vec<String>> = records.iter().map(|r| cells(r).to_vec()).collect();
    let under: Vec<Vec<String>> = records.iter().map(flip_lines).collect();
    aligned(&HEADER, &rows, &under)
}

/// The records as CSV (RFC 4180), a header first; durations in seconds.
pub fn csv(records: &[Value]) -> String {
    let header = [
        "started_at",
        "session",
        "caller",
        "dialed",
        "location",
        "duration_s",
        "disposition",
        "state",
        "flips",
        "script",
        "fallback",
        "tags",
    ];
    let rows = records.iter().map(|record| {
        let text = |key: &str| record[key].as_str().unwrap_or("").to_owned();
        let tags: Vec<String> = record["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| Some(format!("{}={}", t[0].as_str()?, t[1].as_str()?)))
            .collect();
        vec![
            text("started_at"),
            text("session"),
            text("caller"),
            text("dialed"),
            text("location"),
            (record["duration_ms"].as_u64().unwrap_or(0) / 1000).to_string(),
            text("disposition"),
            text("state"),
            record["flips"].as_array().map_or(0, Vec::len).to_string(),
            text("script"),
            (record["fallback"] == true).to_string(),
            tags.join(" "),
        ]
    });
    csv_of(&header, rows)
}

/// The audit log's columns.
const AUDIT_HEADER: [&str; 7] = [
    "TIME", "WHO", "ACTION", "LOCATION", "KEY", "CHANGE", "EXPIRES",
];

/// One audit entry's cells: the change as `old → new` (`–` for none).
fn audit_cells(entry: &AuditEntry) -> Vec<String> {
    let value = |v: &Option<String>| v.as_deref().map_or("–".to_owned(), |v| format!("{v:?}"));
    vec![
        entry.at.to_string(),
        entry.who.clone(),
        entry.action.clone(),
        entry.scope.clone(),
        entry.key.clone(),
        format!("{} → {}", value(&entry.old), value(&entry.value)),
        entry.expires_at.map_or(String::new(), |at| at.to_string()),
    ]
}

/// The audit log (newest first, as the store gives it) as an aligned table.
pub fn audit_table(entries: &[AuditEntry]) -> String {
    let rows: Vec<Vec<String>> = entries.iter().map(audit_cells).collect();
    aligned(&AUDIT_HEADER, &rows, &vec![Vec::new(); rows.len()])
}

/// The audit log as CSV, a header first; an absent value is an empty cell.
pub fn audit_csv(entries: &[AuditEntry]) -> String {
    let header = [
        "at",
        "who",
        "action",
        "location",
        "key",
        "old",
        "value",
        "expires_at",
    ];
    let rows = entries.iter().map(|e| {
        vec![
            e.at.to_string(),
            e.who.clone(),
            e.action.clone(),
            e.scope.clone(),
            e.key.clone(),
            e.old.clone().unwrap_or_default(),
            e.value.clone().unwrap_or_default(),
            e.expires_at.map_or(String::new(), |at| at.to_string()),
        ]
    });
    csv_of(&header, rows)
}

/// Rows under a header, each column as wide as its widest cell; `under[i]` are lines
/// printed as they are below row `i`.
fn aligned(header: &[&str], rows: &[Vec<String>], under: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:<width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut out = line(&header);
    for (row, lines) in rows.iter().zip(under) {
        out.push_str(&line(row));
        for extra in lines {
            out.push_str(extra);
            out.push('\n');
        }
    }
    out
}

/// RFC 4180 CSV: a header, then the rows, CRLF line ends, quoted where needed.
fn csv_of(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let quote = |cell: &str| match cell.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", cell.replace('"', "\"\"")),
        false => cell.to_owned(),
    };
    let mut out = header.join(",") + "\r\n";
    for row in rows {
        let row: Vec<String> = row.iter().map(|c| quote(c)).collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(caller: &str, location: &str, flips: Value) -> Value {
        json!({
            "session": "0190f0e0-0000-7000-8000-3f0c9a1e27b4",
            "started_at": "2026-12-06T10:00:01Z",
            "caller": caller, "dialed": "+61290000001", "location": location,
            "duration_ms": 3_723_000, "disposition": "answered", "state": "ended",
            "script": "front-door", "fallback": false,
            "tags": [["department", "sales"]], "digits": "1", "flips": flips,
        })
    }

    #[test]
    fn the_table_aligns_columns_and_lists_flips_under_their_call() {
        let flip = json!([{ "kind": "pull", "trigger": "pull-code", "from_device": "desk",
            "targets": ["mobile"], "requested_at": "2026-12-06T10:00:30Z", "result": "done" }]);
        let text = table(&[
            record("+61400000001", "sydney", flip),
            record("2001", "New York", json!([])),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("TIME "), "{text}");
        // Every column starts where its header does.
        let at = |row: usize, column: &str| &lines[row][lines[0].find(column).unwrap()..];
        assert!(at(1, "LOCATION").starts_with("sydney "));
        assert!(at(3, "LOCATION").starts_with("New York "));
        assert!(at(1, "DURATION").starts_with("1:02:03 "));
        assert!(at(1, "SESSION").starts_with("3f0c9a1e27b4 "));
        assert!(lines[1].contains("department=sales"));
        assert_eq!(
            lines[2],
            "    flip pull (pull-code) desk -> mobile at 2026-12-06T10:00:30Z: done"
        );
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let text = csv(&[record("\"Bob\", the caller", "sydney", json!([]))]);
        let rows: Vec<&str> = text.split("\r\n").collect();
        assert!(rows[0].starts_with("started_at,session,caller,"));
        assert!(
            rows[1].contains(",\"\"\"Bob\"\", the caller\",+61290000001,sydney,3723,answered,"),
            "{text}"
        );
    }
    #[test]
    fn the_audit_log_prints_as_a_table_and_as_csv() {
        let at = |s: i64| jiff::Timestamp::from_second(1_796_000_000 + s).unwrap();
        let entries = [
            AuditEntry {
                at: at(60),
                who: "expiry".into(),
                action: "expired".into(),
                scope: "New York".into(),
                key: "override".into(),
                old: Some("closed".into()),
                value: None,
                expires_at: None,
            },
            AuditEntry {
                at: at(0),
                who: "api 127.0.0.1".into(),
                action: "set".into(),
                scope: "New York".into(),
                key: "override".into(),
                old: None,
                value: Some("closed, \"staff meeting\"".into()),
                expires_at: Some(at(60)),
            },
        ];
        let table = audit_table(&entries);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        // Columns line up: WHO starts where each row's who starts.
        let who = lines[0].find("WHO").unwrap();
        assert_eq!(lines[1].find("expiry"), Some(who), "{table}");
        assert_eq!(lines[2].find("api 127.0.0.1"), Some(who), "{table}");
        assert!(lines[1].contains("\"closed\" → –"), "{table}");
        assert!(lines[2].ends_with(&at(60).to_string()), "{table}");

        let csv = audit_csv(&entries);
        assert_eq!(
            csv.split("\r\n").nth(2).unwrap(),
            format!(
                "{},api 127.0.0.1,set,New York,override,,\"closed, \"\"staff meeting\"\"\",{}",
                at(0),
                at(60)
            )
        );
    }
}
