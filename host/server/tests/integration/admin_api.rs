//! The admin API and /metrics on a running server.

use crate::common::server::{Server, credentials, http, sipp};

#[test]
fn health_registrations_scripts_and_metrics() {
    let server = Server::start_with_scripts("", &[("listen", test_components::LISTEN)]);
    let (status, body) = http(server.http, "GET", "/api/health", None, "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ok\""));

    assert_eq!(
        sipp(
            server.udp,
            "register.xml",
            &credentials("2001", "s3cret"),
            &["-m", "1"]
        ),
        0
    );
    let (status, body) = http(server.http, "GET", "/api/registrations", None, "");
    assert_eq!(status, 200);
    let registrations: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(registrations[0]["user_id"], "alice");
    assert_eq!(registrations[0]["device"], "sipp");
    assert_eq!(registrations[0]["transport"], "udp");
    assert_eq!(registrations[0]["registered_with"], "node");

    let (_, body) = http(server.http, "GET", "/api/scripts", None, "");
    let scripts: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(scripts[0]["name"], "listen");
    assert_eq!(scripts[0]["exports"], serde_json::json!(["router"]));

    let (_, body) = http(server.http, "GET", "/api/calls", None, "");
    assert_eq!(body, "[]");
    let (_, body) = http(server.http, "GET", "/api/cdrs?limit=5", None, "");
    assert_eq!(body, "[]");

    let (status, metrics) = http(server.http, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    assert!(metrics.contains("wasmpbx_registrations 1\n"), "{metrics}");
    assert!(
        metrics.contains("wasmpbx_phones_behind_edge 0\n"),
        "{metrics}"
    );
    assert!(metrics.contains("wasmpbx_active_calls 0\n"));
    assert!(
        metrics.contains("wasmpbx_build_info{version=\"0.1.0\",wit=\"0.2.0\"} 1\n"),
        "{metrics}"
    );
    every_family_is_described(&metrics);
}

/// Prometheus text: every sample belongs to a family announced with HELP and TYPE.
fn every_family_is_described(metrics: &str) {
    let mut described = Vec::new();
    let mut helped = Vec::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.trim().is_empty(), "{name} has an empty HELP");
            helped.push(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(
                helped.iter().any(|h| h == name),
                "{name}: TYPE without HELP"
            );
            described.push(name.to_owned());
        } else {
            let sample = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| sample.strip_suffix(suffix))
                .filter(|f| described.iter().any(|d| d == f))
                .unwrap_or(sample);
            assert!(
                described.iter().any(|d| d == family),
                "{sample} has no HELP/TYPE"
            );
        }
    }
    assert!(described.len() >= 30, "{described:?}");
}

#[test]
fn key_value_entries_for_admin_toggles() {
    let server = Server::start(
        "[[locations]]\nname = \"sydney\"\nflip_number = \"1\"\nscript = \"front-door\"\nfallback_number = \"2\"\n",
    );
    assert_eq!(
        http(
            server.http,
            "PUT",
            "/api/kv/sydney/override",
            None,
            "closed"
        )
        .0,
        200
    );
    let (_, body) = http(server.http, "GET", "/api/kv/sydney", None, "");
    assert_eq!(body, "{\"override\":\"closed\"}");
    assert_eq!(
        http(
            server.http,
            "PUT",
            "/api/kv/sydney/override",
            None,
            "{\"value\": \"open\"}"
        )
        .0,
        200
    );
    assert_eq!(
        http(server.http, "GET", "/api/kv/sydney", None, "").1,
        "{\"override\":\"open\"}"
    );
    assert_eq!(
        http(server.http, "DELETE", "/api/kv/sydney/override", None, "").0,
        200
    );
    assert_eq!(http(server.http, "GET", "/api/kv/sydney", None, "").1, "{}");
    // Bad input.
    assert_eq!(http(server.http, "GET", "/api/kv/nowhere", None, "").0, 404);
    assert_eq!(
        http(
            server.http,
            "PUT",
            "/api/kv/sydney/x",
            None,
            &"v".repeat(20_000)
        )
        .0,
        413
    );
    assert_eq!(
        http(server.http, "GET", "/api/nothing-here", None, "").0,
        404
    );
    assert_eq!(
        http(server.http, "GET", "/api/cdrs?limit=lots", None, "").0,
        400
    );
}

#[test]
fn the_token_guards_the_api_but_not_metrics() {
    let server = Server::start("[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"sesame\"\n");
    assert_eq!(http(server.http, "GET", "/api/health", None, "").0, 401);
    assert_eq!(
        http(server.http, "GET", "/api/health", Some("wrong"), "").0,
        401
    );
    assert_eq!(
        http(server.http, "GET", "/api/health", Some("sesame"), "").0,
        200
    );
    let (status, metrics) = http(server.http, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("wasmpbx_auth_failures_total{kind=\"api-token\"} 2\n"),
        "refusals are counted: {metrics}"
    );
}

/// The `wasmpbx_…` names in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("wasmpbx_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names
}

#[test]
fn the_dashboard_and_alert_rules_use_only_metrics_the_server_exposes() {
    let server = Server::start_with_scripts("", &[("listen", test_components::LISTEN)]);
    let (_, metrics) = http(server.http, "GET", "/metrics", None, "");
    // Every name a query may use: the families, and a histogram's series.
    let mut exposed = Vec::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            exposed.push(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exposed.push(format!("{name}{suffix}"));
                }
            }
        }
    }
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/deploy");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy.join("grafana/wasmpbx.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().unwrap();
    let mut queries = Vec::new();
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(panels.len() >= 10 && queries.len() >= panels.len());
    let alerts = std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).unwrap();
    assert_eq!(
        alerts.matches("- alert: ").count(),
        alerts.matches("expr: ").count(),
        "every rule has an expression"
    );
    for (file, text) in [
        ("grafana/wasmpbx.json", queries.join("\n")),
        ("prometheus/alerts.yml", alerts),
    ] {
        let used = metric_names(&text);
        assert!(used.len() >= 5, "{file}");
        for name in used {
            assert!(
                exposed.contains(&name),
                "{file} uses {name}, which /metrics lacks"
            );
        }
    }
}

#[test]
fn the_router_answers_wrong_methods_unknown_paths_and_bad_input_in_json() {
    let server = Server::start(
        "[[locations]]\nname = \"New York\"\nflip_number = \"1\"\nscript = \"listen\"\nfallback_number = \"2\"\n",
    );
    let error = |(status, body): (u16, String)| -> (u16, String) {
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        (status, json["error"].as_str().unwrap().to_owned())
    };
    let (status, message) = error(http(server.http, "POST", "/api/health", None, ""));
    assert_eq!(
        (status, message.as_str()),
        (405, "this path does not take that method")
    );
    let (status, _) = error(http(server.http, "GET", "/api/nothing-here", None, ""));
    assert_eq!(status, 404);
    let (status, message) = error(http(server.http, "GET", "/api/cdrs?limit=lots", None, ""));
    assert!(status == 400 && message.contains("limit"), "{message}");
    let big = "x".repeat(20 * 1024);
    let (status, _) = error(http(
        server.http,
        "PUT",
        "/api/kv/New%20York/note",
        None,
        &big,
    ));
    assert_eq!(status, 413);
    // Path segments are percent-decoded: a location with a space is reachable.
    assert_eq!(
        http(
            server.http,
            "PUT",
            "/api/kv/New%20York/override",
            None,
            "closed"
        )
        .0,
        200
    );
    let (status, body) = http(server.http, "GET", "/api/kv/New%20York", None, "");
    assert_eq!((status, body.as_str()), (200, "{\"override\":\"closed\"}"));
    let (status, message) = error(http(server.http, "GET", "/api/kv/Boston", None, ""));
    assert_eq!(
        (status, message.as_str()),
        (404, "no such location: Boston")
    );
}

#[test]
fn the_openapi_document_matches_the_served_routes() {
    let server = Server::start(
        "[http]\nlisten = \"127.0.0.1:0\"\ntoken = \"sesame\"\n[[locations]]\nname = \"main\"\nflip_number = \"1\"\nscript = \"listen\"\nfallback_number = \"2\"\n",
    );
    let (status, body) = http(server.http, "GET", "/api/openapi.json", Some("sesame"), "");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["components"]["securitySchemes"]["token"].is_object());
    let paths = doc["paths"].as_object().unwrap();
    // Every documented operation is served: the router's own 404 and 405 never answer
    // it (a handler's "no such call" may), and it wants the token.
    let mut operations = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "0190f0e0-0000-7000-8000-000000000000")
                .replace("{location}", "main")
                .replace("{name}", "main")
                .replace("{key}", "note");
            let method = method.to_uppercase();
            assert_eq!(
                http(server.http, &method, &concrete, None, "").0,
                401,
                "{method} {path} wants the token"
            );
            operations.push(format!("{method} {path}"));
            if path == "/api/events" {
                // A stream that does not end: connecting is being served.
                crate::common::server::EventStream::connect(server.http, Some("sesame"), "");
                continue;
            }
            let (status, body) = http(server.http, &method, &concrete, Some("sesame"), "x");
            assert!(
                !body.contains("no such path") && !body.contains("does not take that method"),
                "{method} {path} is documented but not served: {status} {body}"
            );
        }
    }
    // And every route the API serves is documented.
    for served in [
        "GET /api/health",
        "GET /api/registrations",
        "GET /api/trunks",
        "GET /api/calls",
        "POST /api/calls/{id}/flip",
        "POST /api/calls/{id}/events",
        "GET /api/intents/{location}",
        "GET /api/cdrs",
        "GET /api/cdrs/{id}",
        "GET /api/recordings/{id}",
        "GET /api/scripts",
        "GET /api/cluster",
        "GET /api/locations",
        "PUT /api/locations/{name}/shadow",
        "DELETE /api/locations/{name}/shadow",
        "GET /api/shadow/{location}",
        "GET /api/kv/{location}",
        "PUT /api/kv/{location}/{key}",
        "DELETE /api/kv/{location}/{key}",
        "GET /api/audit",
        "GET /api/openapi.json",
        "GET /api/events",
    ] {
        assert!(
            operations.iter().any(|o| o == served),
            "{served} is not documented"
        );
    }
    assert_eq!(operations.len(), 22, "{operations:?}");
}
