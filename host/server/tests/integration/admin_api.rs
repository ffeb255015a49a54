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
    assert!(metrics.contains("wasmpbx_active_calls 0\n"));
    assert!(metrics.contains("wasmpbx_script_fallbacks_total{cause=\"trap\"} 0"));
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
    assert_eq!(http(server.http, "GET", "/metrics", None, "").0, 200);
}
