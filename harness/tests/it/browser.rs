//! `report.html` in a real browser: headless Chromium renders it (screenshot), its DOM holds
//! the verdict and every scenario section, and it makes no network request.
//!
//! How a request would be seen: Chromium runs with every request sent through a proxy that
//! is a listener of this test, loopback included (`--proxy-bypass-list=<-loopback>`), so any
//! fetch the page made would arrive there; and a fetch the page's Content-Security-Policy
//! blocked would be logged by Chromium as a CSP violation. A control page that does load an
//! image shows the proxy sees what it should.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support;

/// What the proxy was asked for: the host of each request line (`CONNECT host:443` or
/// `GET http://host/...`).
type Seen = Arc<Mutex<Vec<String>>>;

/// A loopback listener standing in for a proxy: records each request's host, answers 502.
fn recording_proxy() -> (u16, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string();
            let target = line.split_whitespace().nth(1).unwrap_or_default();
            let host = target.trim_start_matches("http://").split(['/', ':']).next().unwrap_or_default().to_string();
            log.lock().unwrap().push(host);
            let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

fn hosts(seen: &Seen) -> Vec<String> {
    std::mem::take(&mut *seen.lock().unwrap())
}

/// Runs headless Chromium on `file` with the project's flags plus `extra`; returns
/// (stdout, stderr).
fn chromium(file: &Path, proxy: u16, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--proxy-bypass-list=<-loopback>",
            "--window-size=1200,1600",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--proxy-server=http://127.0.0.1:{proxy}"))
        .args(extra)
        .arg(format!("file://{}", file.display()))
        .output()
        .unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_html_renders_in_chromium_with_every_section_and_no_network_request() {
    if !support::ensure_tool("chromium") {
        return;
    }
    let run = support::reference_run().await;
    let report = run.join("report.html");
    assert!(report.is_file());
    let s = support::summary(&run);
    let (proxy, seen) = recording_proxy();
    // What Chromium asks for by itself (its own services, whatever the flags): an empty page.
    let shot = tempfile::tempdir().unwrap();
    let blank = shot.path().join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><title>blank</title>").unwrap();
    let _ = chromium(&blank, proxy, &["--dump-dom"]);
    let own = hosts(&seen);

    let (dom, log) = chromium(&report, proxy, &["--dump-dom"]);
    assert!(dom.contains("id=\"verdict\""), "no verdict in the DOM:\n{}", &dom[..dom.len().min(2000)]);
    assert!(dom.contains(s["verdict"]["reason"].as_str().unwrap()));
    for sc in s["scenarios"].as_array().unwrap() {
        let id = format!("id=\"scenario-{}\"", sc["name"].as_str().unwrap());
        assert!(dom.contains(&id), "no section {id}");
    }
    // The sorting script ran: it makes every header focusable.
    assert!(dom.contains("tabindex=\"0\""), "the inline script did not run");
    assert!(!log.contains("Content Security Policy") && !log.contains("Refused to"), "{log}");

    let png = shot.path().join("report.png");
    let (_, log) = chromium(&report, proxy, &[&format!("--screenshot={}", png.display())]);
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}): {log}"));
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 20_000, "screenshot of {} bytes", bytes.len());
    assert!(!log.contains("Content Security Policy") && !log.contains("Refused to"), "{log}");
    let from_page: Vec<String> = hosts(&seen).into_iter().filter(|h| !own.contains(h)).collect();
    assert!(from_page.is_empty(), "report.html made network requests to {from_page:?} (Chromium's own: {own:?})");

    // The control: a page that loads an image from the network is seen by the proxy.
    let control = shot.path().join("control.html");
    std::fs::write(&control, "<!DOCTYPE html><img src=\"http://example.test/x.png\">").unwrap();
    let _ = chromium(&control, proxy, &["--dump-dom"]);
    assert!(hosts(&seen).iter().any(|h| h == "example.test"), "the proxy did not see the control page's request");
}
