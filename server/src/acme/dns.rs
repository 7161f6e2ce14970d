//! A minimal DNS TXT lookup for `dns-01` validation (RFC 8555 §8.4; RFC 1035 §4 messages).
//!
//! One recursive query (RD set) over UDP to `CERTCTL_ACME_DNS_RESOLVER` (or the first
//! `nameserver` of `/etc/resolv.conf`), retried over TCP when the answer is truncated. Every TXT
//! record in the answer section is returned (a CNAME chain answered by the resolver carries the
//! final TXT records there too). The parser is bounds-checked everywhere: a hostile or broken
//! answer is an error, never a panic.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a lookup failed.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// No resolver configured or found.
    #[error("no DNS resolver: {0}")]
    NoResolver(String),
    /// Network failure or timeout.
    #[error("DNS query failed: {0}")]
    Io(String),
    /// The answer could not be parsed or does not match the query.
    #[error("malformed DNS answer: {0}")]
    Malformed(&'static str),
    /// The resolver answered with an error code (SERVFAIL, REFUSED, …).
    #[error("DNS server answered rcode {0}")]
    Rcode(u8),
}

const TYPE_TXT: u16 = 16;
const TIMEOUT: Duration = Duration::from_secs(5);

/// The resolver to ask: `configured` (`ip:port` or `ip`), else `/etc/resolv.conf`.
pub fn resolver(configured: Option<&str>) -> Result<SocketAddr, DnsError> {
    if let Some(c) = configured {
        if let Ok(a) = c.parse::<SocketAddr>() {
            return Ok(a);
        }
        return c
            .parse::<std::net::IpAddr>()
            .map(|ip| SocketAddr::new(ip, 53))
            .map_err(|_| DnsError::NoResolver(format!("'{c}' is not ip[:port]")));
    }
    let conf = std::fs::read_to_string("/etc/resolv.conf").map_err(|e| DnsError::NoResolver(e.to_string()))?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ip| ip.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
        .ok_or_else(|| DnsError::NoResolver("no nameserver in /etc/resolv.conf".into()))
}

/// Builds a TXT query for `name` with transaction `id` (RFC 1035 §4.1).
pub fn build_query(id: u16, name: &str) -> Result<Vec<u8>, DnsError> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00]); // RD
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // QD=1, AN=NS=AR=0
    for label in name.trim_end_matches('.').split('.') {
        let len =
            u8::try_from(label.len()).ok().filter(|l| *l > 0 && *l <= 63).ok_or(DnsError::Malformed("bad label"))?;
        q.push(len);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&TYPE_TXT.to_be_bytes());
    q.extend_from_slice(&[0, 1]); // IN
    Ok(q)
}

fn u16_at(b: &[u8], i: usize) -> Result<u16, DnsError> {
    match (b.get(i), b.get(i + 1)) {
        (Some(h), Some(l)) => Ok(u16::from_be_bytes([*h, *l])),
        _ => Err(DnsError::Malformed("truncated")),
    }
}

/// Skips a (possibly compressed) name starting at `i`; returns the index after it.
fn skip_name(b: &[u8], mut i: usize) -> Result<usize, DnsError> {
    for _ in 0..128 {
        let len = *b.get(i).ok_or(DnsError::Malformed("truncated name"))?;
        match len {
            0 => return Ok(i + 1),
            l if l & 0xC0 == 0xC0 => {
                b.get(i + 1).ok_or(DnsError::Malformed("truncated pointer"))?;
                return Ok(i + 2);
            }
            l if l & 0xC0 != 0 => return Err(DnsError::Malformed("bad label type")),
            l => i += 1 + usize::from(l),
        }
    }
    Err(DnsError::Malformed("name too long"))
}

/// Parsed answer: `Ok(None)` when truncated (retry over TCP), else the TXT records.
pub fn parse_answer(b: &[u8], id: u16) -> Result<Option<Vec<String>>, DnsError> {
    if b.len() < 12 {
        return Err(DnsError::Malformed("short header"));
    }
    if u16_at(b, 0)? != id {
        return Err(DnsError::Malformed("transaction id mismatch"));
    }
    let flags = u16_at(b, 2)?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::Malformed("not a response"));
    }
    if flags & 0x0200 != 0 {
        return Ok(None);
    }
    let rcode = (flags & 0x000F) as u8;
    if rcode == 3 {
        return Ok(Some(Vec::new())); // NXDOMAIN: no records
    }
    if rcode != 0 {
        return Err(DnsError::Rcode(rcode));
    }
    let (qd, an) = (u16_at(b, 4)?, u16_at(b, 6)?);
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(b, i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(b, i)?;
        let typ = u16_at(b, i)?;
        let rdlen = usize::from(u16_at(b, i + 8)?);
        let start = i + 10;
        let rdata = b.get(start..start + rdlen).ok_or(DnsError::Malformed("truncated rdata"))?;
        if typ == TYPE_TXT {
            // RFC 1035 §3.3.14: one or more <character-string>s, concatenated (RFC 8555 §8.4
            // values fit in one, but splitting is legal).
            let mut txt = Vec::new();
            let mut j = 0;
            while j < rdata.len() {
                let l = usize::from(rdata[j]);
                let s = rdata.get(j + 1..j + 1 + l).ok_or(DnsError::Malformed("truncated TXT string"))?;
                txt.extend_from_slice(s);
                j += 1 + l;
            }
            out.push(String::from_utf8_lossy(&txt).into_owned());
        }
        i = start + rdlen;
    }
    Ok(Some(out))
}

/// The TXT records of `name`, asked of `server`.
pub async fn lookup_txt(server: SocketAddr, name: &str) -> Result<Vec<String>, DnsError> {
    let id: u16 = rand::random();
    let query = build_query(id, name)?;
    let io = |e: std::io::Error| DnsError::Io(e.to_string());
    let bind: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let sock = tokio::net::UdpSocket::bind(bind).await.map_err(io)?;
    sock.connect(server).await.map_err(io)?;
    sock.send(&query).await.map_err(io)?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(TIMEOUT, sock.recv(&mut buf))
        .await
        .map_err(|_| DnsError::Io(format!("no answer from {server} within {TIMEOUT:?}")))?
        .map_err(io)?;
    if let Some(records) = parse_answer(&buf[..n], id)? {
        return Ok(records);
    }
    // Truncated: RFC 7766 says retry over TCP, with a two-byte length prefix.
    let tcp = async {
        let mut s = tokio::net::TcpStream::connect(server).await.map_err(io)?;
        let len = u16::try_from(query.len()).map_err(|_| DnsError::Malformed("query too long"))?;
        s.write_all(&len.to_be_bytes()).await.map_err(io)?;
        s.write_all(&query).await.map_err(io)?;
        let mut l = [0u8; 2];
        s.read_exact(&mut l).await.map_err(io)?;
        let mut resp = vec![0u8; usize::from(u16::from_be_bytes(l))];
        s.read_exact(&mut resp).await.map_err(io)?;
        parse_answer(&resp, id)?.ok_or(DnsError::Malformed("truncated over TCP"))
    };
    tokio::time::timeout(TIMEOUT, tcp).await.map_err(|_| DnsError::Io("TCP query timed out".into()))?
}

/// Builds an answer to `query` with `txt` records (for tests and the test DNS server).
pub fn build_answer(query: &[u8], txt: &[&str]) -> Option<Vec<u8>> {
    let end = skip_name(query, 12).ok()? + 4;
    let mut r = query.get(..end)?.to_vec();
    r[2] = 0x81; // QR, RD
    r[3] = 0x80; // RA
    let an = u16::try_from(txt.len()).ok()?.to_be_bytes();
    r[6] = an[0];
    r[7] = an[1];
    for t in txt {
        r.extend_from_slice(&[0xC0, 12]); // pointer to the question name
        r.extend_from_slice(&TYPE_TXT.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        let bytes = t.as_bytes();
        let len = u8::try_from(bytes.len()).ok()?;
        r.extend_from_slice(&(u16::from(len) + 1).to_be_bytes());
        r.push(len);
        r.extend_from_slice(bytes);
    }
    Some(r)
}

/// The question name of a query (for the test DNS server).
pub fn query_name(query: &[u8]) -> Option<String> {
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let l = usize::from(*query.get(i)?);
        if l == 0 {
            break;
        }
        if l > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(i + 1..i + 1 + l)?).into_owned());
        i += 1 + l;
    }
    Some(labels.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_and_an_answer_round_trip() {
        let q = build_query(0x1234, "_acme-challenge.example.com").expect("query");
        assert_eq!(query_name(&q).as_deref(), Some("_acme-challenge.example.com"));
        let a = build_answer(&q, &["abc", "def"]).expect("answer");
        assert_eq!(parse_answer(&a, 0x1234).expect("parse"), Some(vec!["abc".to_string(), "def".to_string()]));
        assert!(parse_answer(&a, 0x9999).is_err());
        assert!(build_query(1, "a..b").is_err());
    }

    #[test]
    fn nxdomain_is_no_records_and_servfail_an_error() {
        let q = build_query(7, "x.example").expect("query");
        let mut a = build_answer(&q, &[]).expect("answer");
        a[3] = 0x83;
        assert_eq!(parse_answer(&a, 7).expect("nx"), Some(vec![]));
        a[3] = 0x82;
        assert!(matches!(parse_answer(&a, 7), Err(DnsError::Rcode(2))));
    }

    #[test]
    fn resolvers_parse() {
        assert_eq!(resolver(Some("127.0.0.1:5353")).expect("addr"), "127.0.0.1:5353".parse().expect("sa"));
        assert_eq!(resolver(Some("10.0.0.1")).expect("ip").port(), 53);
        assert!(resolver(Some("nonsense")).is_err());
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn the_answer_parser_never_panics(b in proptest::collection::vec(any::<u8>(), 0..300), id in any::<u16>()) {
                let _ = parse_answer(&b, id);
                let _ = query_name(&b);
            }
        }
    }
}
