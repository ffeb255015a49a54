//! What a re-read config file changes. Users, devices, locations, trunks, flip settings,
//! HTTP origins and token, emergency numbers, digest algorithms and the drain timeout
//! take effect at once; the keys below are bound at start (sockets, the database, the
//! media ports, the compiled scripts, the webhooks' tasks) and keep their running values
//! until a restart.

use super::Config;

/// A key only a restart applies: how to read it (to compare) and to keep its running
/// value.
struct RestartOnly {
    key: &'static str,
    read: fn(&Config) -> String,
    keep: fn(&mut Config, &Config),
}

const RESTART_ONLY: &[RestartOnly] = &[
    RestartOnly {
        key: "sip.listen",
        read: |c| format!("{:?}", c.sip.listen),
        keep: |c, old| c.sip.listen = old.sip.listen.clone(),
    },
    RestartOnly {
        key: "sip.shards",
        read: |c| c.sip.shards.to_string(),
        keep: |c, old| c.sip.shards = old.sip.shards,
    },
    RestartOnly {
        key: "sip.domain",
        read: |c| c.sip.domain.clone(),
        keep: |c, old| c.sip.domain = old.sip.domain.clone(),
    },
    RestartOnly {
        key: "sip.dns_servers",
        read: |c| format!("{:?}", c.sip.dns_servers),
        keep: |c, old| c.sip.dns_servers = old.sip.dns_servers.clone(),
    },
    RestartOnly {
        key: "sip.tls_cert",
        read: |c| format!("{:?}", c.sip.tls_cert),
        keep: |c, old| c.sip.tls_cert = old.sip.tls_cert.clone(),
    },
    RestartOnly {
        key: "sip.tls_key",
        read: |c| format!("{:?}", c.sip.tls_key),
        keep: |c, old| c.sip.tls_key = old.sip.tls_key.clone(),
    },
    RestartOnly {
        key: "http.listen",
        read: |c| c.http.listen.to_string(),
        keep: |c, old| c.http.listen = old.http.listen,
    },
    RestartOnly {
        key: "http.tls_cert",
        read: |c| format!("{:?}", c.http.tls_cert),
        keep: |c, old| c.http.tls_cert = old.http.tls_cert.clone(),
    },
    RestartOnly {
        key: "http.tls_key",
        read: |c| format!("{:?}", c.http.tls_key),
        keep: |c, old| c.http.tls_key = old.http.tls_key.clone(),
    },
    RestartOnly {
        key: "media",
        read: |c| format!("{:?}", c.media),
        keep: |c, old| c.media = old.media.clone(),
    },
    RestartOnly {
        key: "scripts",
        read: |c| format!("{:?}", c.scripts),
        keep: |c, old| c.scripts = old.scripts.clone(),
    },
    RestartOnly {
        key: "store",
        // Not Debug, which hides the URL's password: a new password needs a restart too.
        read: |c| format!("{:?} {:?}", c.store.path, c.store.url),
        keep: |c, old| c.store = old.store.clone(),
    },
    RestartOnly {
        key: "cluster",
        read: |c| format!("{:?}", c.cluster),
        keep: |c, old| c.cluster = old.cluster.clone(),
    },
    RestartOnly {
        key: "webhooks",
        // Compared with their secrets (Debug hides them); never logged.
        read: |c| {
            let hooks: Vec<_> = c
                .webhooks
                .iter()
                .map(|w| (&w.url, &w.events, &w.secret))
                .collect();
            format!("{hooks:?}")
        },
        keep: |c, old| c.webhooks = old.webhooks.clone(),
    },
];

/// A re-read config against the running one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// What changed and applies now, one line each (`users: added carol`); never a
    /// value, so no password or token reaches a log.
    pub applied: Vec<String>,
    /// Keys that changed but wait for a restart.
    pub need_restart: Vec<&'static str>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.need_restart.is_empty()
    }
}

/// The config to run now — `new`, with the restart-only keys kept as they run — and what
/// changed.
pub fn reload(running: &Config, mut new: Config) -> (Config, Changes) {
    let mut changes = Changes::default();
    for RestartOnly { key, read, keep } in RESTART_ONLY {
        if read(running) != read(&new) {
            changes.need_restart.push(key);
            keep(&mut new, running);
        }
    }
    let lists = [
        named_changes("users", &running.users, &new.users, |u| &u.id),
        named_changes("locations", &running.locations, &new.locations, |l| &l.name),
        named_changes("trunks", &running.trunks, &new.trunks, |t| &t.name),
    ];
    changes.applied.extend(lists.into_iter().flatten());
    let settings = [
        ("server", running.server != new.server),
        ("flip", running.flip != new.flip),
        ("http.token", running.http.token != new.http.token),
        (
            "http.allowed_origins",
            running.http.allowed_origins != new.http.allowed_origins,
        ),
        (
            "sip.emergency_numbers",
            running.sip.emergency_numbers != new.sip.emergency_numbers,
        ),
        (
            "sip.digest_algorithms",
            running.sip.digest_algorithms != new.sip.digest_algorithms,
        ),
        (
            "sip.dialog_keepalive_s",
            running.sip.dialog_keepalive_s != new.sip.dialog_keepalive_s,
        ),
    ];
    changes.applied.extend(
        settings
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| format!("{key}: changed")),
    );
    (new, changes)
}

/// `"users: added carol; removed dave; changed alice"`, or nothing if the lists match.
fn named_changes<T: PartialEq>(
    what: &str,
    running: &[T],
    new: &[T],
    name: impl Fn(&T) -> &String,
) -> Option<String> {
    let has = |list: &[T], wanted: &String| list.iter().any(|x| name(x) == wanted);
    let names = |list: &[T], keep: &dyn Fn(&T) -> bool| -> Vec<String> {
        list.iter()
            .filter(|x| keep(x))
            .map(|x| name(x).clone())
            .collect()
    };
    let added = names(new, &|x| !has(running, name(x)));
    let removed = names(running, &|x| !has(new, name(x)));
    let changed = names(new, &|x| {
        running.iter().any(|old| name(old) == name(x) && old != x)
    });
    let parts: Vec<String> = [("added", added), ("removed", removed), ("changed", changed)]
        .into_iter()
        .filter(|(_, names)| !names.is_empty())
        .map(|(verb, names)| format!("{verb} {}", names.join(", ")))
        .collect();
    (!parts.is_empty()).then(|| format!("{what}: {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            r#"
[sip]
listen = ["udp:127.0.0.1:5060"]
[http]
token = "t0ken-one"

[[users]]
id = "alice"
extension = "2001"
password = "s3cret"

[[users]]
id = "dave"
extension = "2004"
password = "d4ve"
{extra}"#
        );
        Config::parse(&text, std::path::Path::new("test.toml")).unwrap()
    }

    #[test]
    fn users_added_removed_and_changed_are_named_without_their_secrets() {
        let running = config("");
        let new = config(
            r#"
[[users]]
id = "carol"
extension = "2003"
password = "c4rol"
"#,
        );
        let mut new = new;
        new.users.retain(|u| u.id != "dave");
        new.users[0].password = Some("n3w-secret".into());
        new.http.token = Some("t0ken-two".into());
        let (applied, changes) = reload(&running, new);
        assert_eq!(
            changes.applied,
            [
                "users: added carol; removed dave; changed alice",
                "http.token: changed"
            ]
        );
        assert!(changes.need_restart.is_empty());
        assert_eq!(applied.users.len(), 2);
        let logged = changes.applied.join(" ");
        assert!(
            !logged.contains("n3w") && !logged.contains("t0ken"),
            "{logged}"
        );
    }

    #[test]
    fn keys_bound_at_start_keep_their_running_values_and_say_so() {
        let running = config("");
        let mut new = config("");
        new.sip.listen = config("").sip.listen;
        new.sip.listen[0].addr.set_port(5070);
        new.store.path = "elsewhere.db".into();
        new.flip.pull_code = "*99".into();
        let (applied, changes) = reload(&running, new);
        assert_eq!(changes.need_restart, ["sip.listen", "store"]);
        assert_eq!(changes.applied, ["flip: changed"]);
        assert_eq!(
            applied.sip.listen, running.sip.listen,
            "still the bound socket"
        );
        assert_eq!(applied.store.path, running.store.path);
        assert_eq!(applied.flip.pull_code, "*99");
    }

    #[test]
    fn the_same_file_again_changes_nothing() {
        let (_, changes) = reload(&config(""), config(""));
        assert!(changes.is_empty(), "{changes:?}");
    }
}
