//! A webhook receiver on loopback: the notification channel of a fault trial points at it, so
//! the harness sees every delivery the server makes and can tell a lost notification from one
//! delivered twice.
//!
//! It speaks just enough HTTP/1.1 for the server's webhook client: it reads a request's head
//! and its `Content-Length` body, takes the JSON body's `id` (the notification event id), and
//! answers `200` with an empty body, keeping the connection open for the next request.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request the receiver reads (a notification body is well below it).
const MAX_REQUEST: usize = 1 << 20;

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    /// `http://127.0.0.1:<port>/notify`.
    pub url: String,
    seen: Arc<Mutex<BTreeMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Binds 127.0.0.1:0 and starts accepting.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}/notify", listener.local_addr()?);
        let seen: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, s.clone()));
            }
        });
        Ok(Receiver { url, seen, task })
    }

    /// Deliveries so far: event id → how many times it arrived.
    pub fn deliveries(&self) -> BTreeMap<String, u64> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut stream: TcpStream, seen: Arc<Mutex<BTreeMap<String, u64>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(body) = read_request(&mut stream, &mut buf).await else { return };
        if let Some(id) = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned))
        {
            *seen.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default() += 1;
        }
        if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
            return;
        }
    }
}

/// Reads one request from `stream` (leftover bytes stay in `buf`); returns its body, or `None`
/// when the connection ended or the request is not one it understands.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > MAX_REQUEST || !fill(stream, buf).await {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    if len > MAX_REQUEST {
        return None;
    }
    while buf.len() < head_end + len {
        if !fill(stream, buf).await {
            return None;
        }
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some(body)
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_delivery_is_counted_by_event_id_over_one_connection() {
        let r = Receiver::start().await.unwrap();
        let client = reqwest::Client::new();
        for id in ["a", "b", "a"] {
            let resp = client.post(&r.url).json(&serde_json::json!({"id": id, "type": "t"})).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
        let d = r.deliveries();
        assert_eq!((d.get("a").copied(), d.get("b").copied(), d.len()), (Some(2), Some(1), 2));
    }
}
