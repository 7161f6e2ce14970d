//! Input limits and connections found by the security probe (issue 14, items 7, 8 and 13):
//! long text values, connections that never finish their headers, and ACME paths that do not
//! exist.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::api_support::{assert_envelope, call, spawn_api};
use crate::support::{ADMIN_KEY, TestApp};

/// The schema `s` with a `$ref` followed into `components.schemas`.
fn resolve<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &doc["components"]["schemas"][name],
        None => s,
    }
}

fn is_string(s: &Value) -> bool {
    s["type"] == "string" || s["type"].as_array().is_some_and(|t| t.iter().any(|t| t == "string"))
}

/// Every string property of `schema` (at any depth, array items included) as the request body
/// that puts `value` there and nothing else, with the property's name.
fn bodies_with(doc: &Value, schema: &Value, value: &Value, out: &mut Vec<(String, Value)>) {
    let schema = resolve(doc, schema);
    for alt in ["oneOf", "anyOf", "allOf"] {
        for s in schema[alt].as_array().into_iter().flatten() {
            bodies_with(doc, s, value, out);
        }
    }
    let Some(props) = schema["properties"].as_object() else { return };
    for (name, prop) in props {
        let prop = resolve(doc, prop);
        let mut found = Vec::new();
        if is_string(prop) {
            assert!(
                prop["maxLength"].as_u64().is_some_and(|n| n < 10_240),
                "{name}: every request string documents a maxLength below 10 KB: {prop}"
            );
            found.push(value.clone());
        }
        if is_string(resolve(doc, &prop["items"])) {
            assert!(resolve(doc, &prop["items"])["maxLength"].is_u64(), "{name}[]: items document a maxLength");
            found.push(json!([value]));
        }
        let mut nested = Vec::new();
        bodies_with(doc, prop, value, &mut nested);
        found.extend(nested.into_iter().map(|(_, v)| v));
        for v in found {
            let mut body = Map::new();
            body.insert(name.clone(), v);
            out.push((name.clone(), Value::Object(body)));
        }
    }
}

#[tokio::test]
async fn every_string_of_every_request_schema_refuses_10_kb_with_a_400_naming_it() {
    let app = spawn_api(&[]).await;
    let doc = call(&app, Method::GET, "/api/v1/openapi.json", None, None).await.json;
    let long = Value::String("x".repeat(10_240));
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        // Path parameters: any value routes; the body is refused before a handler looks it up.
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "probe-id" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for (method, op) in item.as_object().expect("item") {
            let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") else { continue };
            let mut bodies = Vec::new();
            bodies_with(&doc, schema, &long, &mut bodies);
            for (field, body) in bodies {
                let m: Method = method.to_ascii_uppercase().parse().expect("method");
                let a = call(&app, m, &concrete, Some(ADMIN_KEY), Some(&body)).await;
                assert_envelope(&a, 400);
                let msg = a.json["message"].as_str().unwrap_or_default();
                assert!(msg.contains(&field) && msg.contains("at most"), "{method} {path} {field}: {msg}");
                tried += 1;
            }
        }
    }
    assert!(tried >= 40, "the walk reached the request schemas ({tried} strings)");
    app.stop().await;
}

#[tokio::test]
async fn the_probes_long_values_are_400s_not_500s() {
    let app = spawn_api(&[]).await;
    let long = "v".repeat(4000);
    let mut body = crate::api_support::cert_body("long-values");
    for field in ["environment", "agent_id", "certificate_profile_id"] {
        let mut b = body.clone();
        b[field] = json!(long);
        let a = call(&app, Method::POST, "/api/v1/certificates", Some(ADMIN_KEY), Some(&b)).await;
        assert_envelope(&a, 400);
        assert!(a.json["message"].as_str().unwrap_or_default().starts_with(field), "{}", a.json);
        let a =
            call(&app, Method::PUT, "/api/v1/certificates/mc-demo-api", Some(ADMIN_KEY), Some(&json!({field: long})))
                .await;
        assert_envelope(&a, 400);
    }
    body = json!({"name": "o", "email": "o@example.com", "team_id": long});
    assert_envelope(&call(&app, Method::POST, "/api/v1/owners", Some(ADMIN_KEY), Some(&body)).await, 400);
    app.stop().await;
}

/// Reads from `stream` until the server closes it (EOF or reset), for at most `within`; the
/// bytes read, or `None` when it was still open.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed.ok().map(|()| got)
}

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed_by_the_server() {
    let app = spawn_api(&["--server-header-read-timeout", "1s", "--server-idle-timeout", "30s"]).await;
    let mut stream = TcpStream::connect(addr(&app)).await.expect("connect");
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: probe\r\nX-Slow: ").await.expect("half a request");
    // Trickle a byte now and then: the header timeout is a deadline, not an idle timer.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        if stream.write_all(b"a").await.is_err() {
            break;
        }
    }
    let got = read_until_closed(&mut stream, Duration::from_secs(20)).await;
    let got = got.expect("the server closed the connection");
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "no request was served");

    // A complete request on a fresh connection is served as usual, and the idle keep-alive
    // connection is closed afterwards by the same timeout.
    let mut stream = TcpStream::connect(addr(&app)).await.expect("connect");
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: probe\r\n\r\n").await.expect("request");
    let got = read_until_closed(&mut stream, Duration::from_secs(20)).await.expect("closed after idling");
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
    app.stop().await;
}

#[tokio::test]
async fn a_silent_or_half_http2_connection_is_closed_by_the_idle_timeout() {
    let app = spawn_api(&["--server-header-read-timeout", "30s", "--server-idle-timeout", "1s"]).await;
    // Silent from the start.
    let mut silent = TcpStream::connect(addr(&app)).await.expect("connect");
    assert!(read_until_closed(&mut silent, Duration::from_secs(20)).await.is_some(), "silent connection closed");
    // Stops inside the HTTP/2 preface, where no HTTP/1 header timer runs yet.
    let mut half = TcpStream::connect(addr(&app)).await.expect("connect");
    half.write_all(b"PRI * HTTP/2.0\r\n").await.expect("half a preface");
    assert!(read_until_closed(&mut half, Duration::from_secs(20)).await.is_some(), "half preface closed");
    app.stop().await;
}

#[tokio::test]
async fn unknown_acme_paths_answer_a_problem_document_with_a_fresh_nonce() {
    let app = spawn_api(&[]).await;
    for (method, path) in [
        (Method::GET, "/acme/nope"),
        (Method::POST, "/acme/new-thing"),
        (Method::GET, "/acme/profile/prof-test/unknown/deeper"),
        (Method::GET, "/acme"),
    ] {
        let r = app.client.request(method.clone(), app.url(path)).send().await.expect("request");
        assert_eq!(r.status(), 404, "{method} {path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{method} {path}");
        assert!(r.headers().contains_key("replay-nonce"), "{method} {path}: a fresh nonce");
        assert_eq!(r.headers()["cache-control"], "no-store", "{method} {path}");
        let v: Value = r.json().await.expect("problem");
        assert_eq!(v["type"], "urn:ietf:params:acme:error:malformed", "{v}");
    }
    // GET errors of real ACME resources carry them too (docs/operator/acme.md).
    let r = app.client.get(app.url("/acme/renewal-info/not-a-cert-id")).send().await.expect("ari");
    assert_eq!(r.status(), 400);
    assert!(r.headers().contains_key("replay-nonce"));
    assert_eq!(r.headers()["cache-control"], "no-store");
    // A path parameter that is not UTF-8 is a malformed problem too, GET or POST, on every
    // parameterized ACME route (the probe's finding: axum's plain-text rejection leaked).
    for (method, path) in [
        (Method::GET, "/acme/renewal-info/%ff"),
        (Method::POST, "/acme/order/%ff"),
        (Method::POST, "/acme/order/%ff/finalize"),
        (Method::POST, "/acme/account/%fe%ff"),
        (Method::POST, "/acme/account/%ff/orders"),
        (Method::POST, "/acme/authz/%ff"),
        (Method::POST, "/acme/challenge/%ff"),
        (Method::POST, "/acme/cert/%ff"),
        (Method::POST, "/acme/profile/prof-test/order/%ff"),
    ] {
        let r = app
            .client
            .request(method.clone(), app.url(path))
            .header("content-type", "application/jose+json")
            .body("{}")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 400, "{method} {path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{method} {path}");
        let v: Value = r.json().await.expect("problem");
        assert_eq!(v["type"], "urn:ietf:params:acme:error:malformed", "{method} {path}: {v}");
    }
    // A successful GET stays cacheable and nonce-free.
    let r = app.client.get(app.url("/acme/directory")).send().await.expect("directory");
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("replay-nonce"));
    // The REST API keeps its envelope for unknown paths.
    assert_envelope(&call(&app, Method::GET, "/api/v1/nope", Some(ADMIN_KEY), None).await, 404);
    app.stop().await;
}
