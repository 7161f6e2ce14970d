//! The one set of rules for the names a certificate may carry, shared by every path that leads
//! to a signature: API certificate create and update (write time, 422), the agent CSR and
//! server-side keygen (through [`super::LocalCa::issue`], which checks every leaf it signs),
//! and ACME new-order and finalize (`rejectedIdentifier` / `badCSR`).
//!
//! The rules:
//! - a DNS name is dot-separated labels of letters, digits and hyphens (LDH, RFC 1123 §2.1),
//!   1–63 octets each, not starting or ending with a hyphen, 253 octets at most in all;
//!   internationalised names travel as A-labels (`xn--…`, RFC 5890), which must decode;
//! - no empty labels (`a..b`, a leading or trailing dot) and no spaces or other characters;
//! - a wildcard is only the whole leftmost label (`*.example.com`) with at least two labels
//!   after it (`*.com`, `*.*.com`, `*` and `f*o.example.com` are refused);
//! - the rightmost label is not all digits, so an IP address never passes as a DNS name:
//!   IP addresses are only ever IP SANs, written as a plain address (`10.0.0.1/8` is neither);
//! - at most the profile's `max_sans` distinct names.

use std::net::IpAddr;

/// A name refused by the rules, with the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Not a DNS name or IP address the rules allow.
    #[error("'{value}' is not a valid certificate name: {reason}")]
    Invalid {
        /// The value as given (shortened when huge).
        value: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// More names than the profile allows.
    #[error("{count} names requested; the profile allows at most {max}")]
    TooMany {
        /// Distinct names requested.
        count: usize,
        /// The profile's `max_sans`.
        max: usize,
    },
}

/// A valid name: a DNS name (lower-case) or an IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// A DNS SAN.
    Dns(String),
    /// An IP SAN.
    Ip(IpAddr),
}

fn invalid(value: &str, reason: &'static str) -> NameError {
    NameError::Invalid { value: crate::http::error::shorten(value), reason }
}

/// Longest DNS name in octets, without a trailing dot (RFC 1035 §2.3.4).
pub const MAX_DNS_NAME: usize = 253;
/// Longest label in octets.
pub const MAX_LABEL: usize = 63;

/// Checks one LDH label (not the wildcard).
fn check_label(value: &str, label: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(invalid(value, "empty label"));
    }
    if label.len() > MAX_LABEL {
        return Err(invalid(value, "a label is longer than 63 octets"));
    }
    if label.contains('*') {
        return Err(invalid(value, "a wildcard may only be the whole leftmost label"));
    }
    if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(invalid(
            value,
            "labels may hold only letters, digits and hyphens (internationalised names as xn-- A-labels)",
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(invalid(value, "a label may not start or end with a hyphen"));
    }
    if let Some(puny) = label.get(..4).filter(|p| p.eq_ignore_ascii_case("xn--")).map(|_| &label[4..])
        && idna::punycode::decode_to_string(puny).is_none_or(|u| u.is_empty())
    {
        return Err(invalid(value, "an xn-- label is not a valid A-label"));
    }
    Ok(())
}

/// A DNS name under the rules, lower-cased.
pub fn dns_name(value: &str) -> Result<String, NameError> {
    let lower = value.to_ascii_lowercase();
    if lower.is_empty() {
        return Err(invalid(value, "empty name"));
    }
    if lower.len() > MAX_DNS_NAME {
        return Err(invalid(value, "longer than 253 octets"));
    }
    let labels: Vec<&str> = lower.split('.').collect();
    let (wildcard, rest) = match labels.split_first() {
        Some((&"*", rest)) => (true, rest),
        _ => (false, labels.as_slice()),
    };
    if wildcard && rest.len() < 2 {
        return Err(invalid(value, "a wildcard needs at least two labels after it (*.example.com)"));
    }
    if rest.is_empty() {
        return Err(invalid(value, "empty name"));
    }
    for label in rest {
        check_label(value, label)?;
    }
    if rest.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err(invalid(value, "the last label is all digits; IP addresses are only valid as IP SANs"));
    }
    Ok(lower)
}

/// One SAN value: an IP address if it is one, else a DNS name under the rules.
pub fn name(value: &str) -> Result<Name, NameError> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(Name::Ip(ip));
    }
    dns_name(value).map(Name::Dns)
}

/// Splits `values` into distinct DNS and IP SANs (order kept), checking each and the count
/// against `max_sans` (when the profile sets one).
pub fn check_all<'a>(
    values: impl IntoIterator<Item = &'a str>,
    max_sans: Option<usize>,
) -> Result<(Vec<String>, Vec<IpAddr>), NameError> {
    let mut dns: Vec<String> = Vec::new();
    let mut ips: Vec<IpAddr> = Vec::new();
    for v in values {
        match name(v)? {
            Name::Dns(d) if !dns.contains(&d) => dns.push(d),
            Name::Ip(ip) if !ips.contains(&ip) => ips.push(ip),
            _ => {}
        }
        // Checked while counting, so a request with a million names stops at max + 1.
        if let Some(max) = max_sans
            && dns.len() + ips.len() > max
        {
            return Err(NameError::TooMany { count: dns.len() + ips.len(), max });
        }
    }
    Ok((dns, ips))
}

/// Checks names already split into DNS and IP SANs (what a leaf is about to carry).
pub fn check_split(dns: &[String], ips: &[IpAddr], max_sans: Option<usize>) -> Result<(), NameError> {
    for d in dns {
        if dns_name(d)? != *d {
            return Err(invalid(d, "DNS names are signed lower-case"));
        }
    }
    match max_sans {
        Some(max) if dns.len() + ips.len() > max => Err(NameError::TooMany { count: dns.len() + ips.len(), max }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldh_names_and_proper_wildcards_pass_lower_cased() {
        assert_eq!(dns_name("WWW.Example.COM"), Ok("www.example.com".into()));
        assert_eq!(dns_name("*.example.com"), Ok("*.example.com".into()));
        assert_eq!(dns_name("db01"), Ok("db01".into()));
        assert_eq!(dns_name("xn--bcher-kva.example"), Ok("xn--bcher-kva.example".into()));
        assert_eq!(dns_name("a-b.c0.io"), Ok("a-b.c0.io".into()));
    }

    #[test]
    fn the_probes_names_are_refused() {
        for bad in [
            "*.*.com",
            "*",
            "*.com",
            "exa mple.com",
            "a..b",
            "10.0.0.1/8",
            ".example.com",
            "example.com.",
            "f*o.example.com",
            "-a.example.com",
            "a-.example.com",
            "bücher.example",
            "xn--.example",
            "under_score.example.com",
            "10.0.0.1",
            "",
        ] {
            assert!(dns_name(bad).is_err(), "{bad:?} passed");
        }
        assert!(dns_name(&format!("{}.com", "a".repeat(64))).is_err());
        // 253 octets is the longest name; 263 is too long.
        assert!(dns_name(&format!("{}com", "abcdefghi.".repeat(25))).is_ok());
        assert!(dns_name(&format!("{}com", "abcdefghi.".repeat(26))).is_err());
    }

    #[test]
    fn ips_are_ip_sans_and_the_count_is_capped() {
        assert_eq!(name("10.0.0.1"), Ok(Name::Ip("10.0.0.1".parse().expect("ip"))));
        assert_eq!(name("::1"), Ok(Name::Ip("::1".parse().expect("ip"))));
        assert!(name("10.0.0.1/8").is_err());
        let (dns, ips) = check_all(["a.example.com", "A.example.com", "10.0.0.1"], Some(2)).expect("two distinct");
        assert_eq!((dns.len(), ips.len()), (1, 1));
        assert_eq!(
            check_all(["a.example.com", "b.example.com", "c.example.com"], Some(2)),
            Err(NameError::TooMany { count: 3, max: 2 })
        );
        assert!(check_split(&["Upper.example.com".into()], &[], None).is_err());
    }
}
