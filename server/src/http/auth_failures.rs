//! Limits failed authentications per client address (`CERTCTL_AUTH_FAILURE_LIMIT` per
//! `CERTCTL_AUTH_FAILURE_WINDOW`), so API keys and agent credentials cannot be guessed at line
//! rate and wrong agent credentials cannot be used to load the database.
//!
//! - Only failures count: a bearer token that is neither an API key nor the credential of the
//!   agent in the path. A valid API key never touches this limiter (it is matched first, in
//!   memory), so it is never counted or delayed, whatever its address did.
//! - Once an address is over the limit, requests that are not a valid API key get 429 with
//!   `Retry-After` *before* the agent-credential lookup, so a flood of wrong agent credentials
//!   costs no database work. A valid agent credential from such an address waits too (it cannot
//!   be told from a guess without the lookup).
//! - Addresses are the TCP peer: an IPv4 address, or an IPv6 /64 (one host usually owns a whole
//!   /64). Behind a proxy every client shares the proxy's address.
//! - Per replica: an in-process [`MemoryLimiter`] (sliding window, bounded key count, swept by
//!   the rate-limit janitor). With N replicas an address gets up to N × limit guesses per window;
//!   a shared PostgreSQL counter would put a write on the path this limiter exists to protect.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::ConnectInfo;
use axum::http::request::Parts;
use chrono::Utc;

use super::error::ApiError;
use crate::Config;
use crate::ratelimit::{Limit, MemoryLimiter, RateLimited, memory};

/// The per-address failed-authentication limiter.
#[derive(Debug)]
pub struct AuthFailures {
    limiter: Arc<MemoryLimiter>,
    /// Set by the first recorded failure: until then checks cost one atomic load.
    seen_any: AtomicBool,
}

impl AuthFailures {
    /// `None` when `CERTCTL_AUTH_FAILURE_LIMIT` is 0.
    pub fn from_config(config: &Config) -> Option<Self> {
        if config.auth_failure_limit == 0 {
            return None;
        }
        let limit = Limit { max: i64::from(config.auth_failure_limit), window: config.auth_failure_window };
        let limiter = Arc::new(MemoryLimiter::new("auth-failures", limit, memory::DEFAULT_MAX_KEYS));
        memory::register(&limiter);
        Some(AuthFailures { limiter, seen_any: AtomicBool::new(false) })
    }

    /// 429 when `client` is over the limit; records nothing.
    pub fn check(&self, client: &str) -> Result<(), ApiError> {
        if !self.seen_any.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.limiter.peek(client, Utc::now()).map_err(too_many)
    }

    /// Records one failed authentication of `client`; 429 when it is over the limit (a refused
    /// attempt is not recorded, so the window frees up on time).
    pub fn record(&self, client: &str) -> Result<(), ApiError> {
        self.seen_any.store(true, Ordering::Relaxed);
        match self.limiter.allow_now(client, Utc::now()) {
            Ok(()) => Ok(()),
            Err(limited) => Err(too_many(limited)),
        }
    }
}

fn too_many(limited: RateLimited) -> ApiError {
    let wait = limited.retry_after;
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::TooManyRequests(secs.max(1))
}

/// The limiter key of the request's peer: the IPv4 address, or the IPv6 /64 prefix (IPv4-mapped
/// IPv6 addresses count as IPv4). `unknown` when the server was not given connection info.
pub fn client_key(parts: &Parts) -> String {
    let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() else {
        return "unknown".into();
    };
    address_key(addr.ip())
}

fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{}/64", Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_share_their_64_and_mapped_ipv4_is_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap_or(IpAddr::V4([0, 0, 0, 0].into()));
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap_or(IpAddr::V4([0, 0, 0, 0].into()));
        assert_eq!(address_key(a), "2001:db8:1:2::/64");
        assert_eq!(address_key(a), address_key(b));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap_or(IpAddr::V4([0, 0, 0, 0].into()));
        assert_eq!(address_key(mapped), "192.0.2.7");
    }
}
