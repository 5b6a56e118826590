//! Who is asking: the client IP (through trusted proxies only) and a user id the client
//! cannot forge at will (optionally HMAC-signed).

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::decision::{Problem, Reason};

/// An IP range (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `addr` or `addr/bits`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().map_err(|_| "not an IP address".to_owned())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { net, bits })
    }

    /// True when `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(i) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(i) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's IP: the socket peer, unless the peer is a trusted proxy, in which case the
/// rightmost `X-Forwarded-For` entry that is not itself a trusted proxy. Entries that do not
/// parse stop the walk (a forged or garbled header cannot pick an arbitrary address beyond the
/// last trusted hop).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let Some(xff) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for hop in xff.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

/// The address a per-IP limit counts: an IPv4 address as it is, an IPv6 address as its
/// network of `v6_prefix` bits (`2001:db8:1:2::/64`). One IPv6 subscriber is usually given a
/// whole /64 (or more), so counting single addresses would hand each client 2^64 fresh limits.
pub fn limit_network(ip: IpAddr, v6_prefix: u8) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let bits = u32::from(v6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            let net = std::net::Ipv6Addr::from(u128::from(v6) & mask);
            format!("{net}/{bits}")
        }
    }
}

/// Checks a user id as sent by the client. Without a secret the id is taken as is (after a
/// sanity check); with one it must be `<id>.<hex HMAC-SHA256(secret, id)>` and the bare id is
/// returned.
pub fn verify_user(raw: &str, secret: Option<&str>) -> Result<String, Problem> {
    let bad = |detail: &str| Problem::new(Reason::BadIdentity, 401, "Unverified user", detail);
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 256 || raw.chars().any(char::is_control) {
        return Err(bad("the user id header must be 1-256 printable characters"));
    }
    let Some(secret) = secret else {
        return Ok(raw.to_owned());
    };
    let (id, sig) = raw
        .rsplit_once('.')
        .ok_or_else(|| bad("the user id must be signed: <id>.<hex signature>"))?;
    let sig = decode_hex(sig).ok_or_else(|| bad("the user id signature is not hex"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|_| bad("signing is misconfigured"))?;
    mac.update(id.as_bytes());
    mac.verify_slice(&sig)
        .map_err(|_| bad("the user id signature does not verify"))?;
    Ok(id.to_owned())
}

/// Signs a user id the way [`verify_user`] expects (for the operator's backend and tests).
pub fn sign_user(id: &str, secret: &str) -> String {
    let mut out = String::with_capacity(id.len() + 65);
    out.push_str(id);
    out.push('.');
    if let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        mac.update(id.as_bytes());
        for b in mac.finalize().into_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_only_through_trusted_proxies() {
        let trusted = [
            Cidr::parse("127.0.0.1").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap(),
        ];
        // Untrusted peer: the header is ignored (forged).
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        // Trusted peer: rightmost untrusted hop.
        assert_eq!(
            client_ip(
                ip("127.0.0.1"),
                Some("6.6.6.6, 198.51.100.7, 10.1.2.3"),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // Garbage stops the walk at the last good hop.
        assert_eq!(
            client_ip(ip("127.0.0.1"), Some("evil, 10.0.0.5"), &trusted),
            ip("10.0.0.5")
        );
        assert_eq!(
            client_ip(ip("::ffff:127.0.0.1"), Some("9.9.9.9"), &trusted),
            ip("9.9.9.9")
        );
        assert_eq!(client_ip(ip("127.0.0.1"), None, &trusted), ip("127.0.0.1"));
    }

    #[test]
    fn cidr_edges() {
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().contains(ip("11.0.0.0")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn signed_user_ids() {
        let secret = "0123456789abcdef-secret";
        let signed = sign_user("alice", secret);
        assert_eq!(verify_user(&signed, Some(secret)).unwrap(), "alice");
        assert_eq!(verify_user("alice", None).unwrap(), "alice");
        let forged = signed.replace("alice", "mallory");
        assert_eq!(verify_user(&forged, Some(secret)).unwrap_err().status, 401);
        assert!(verify_user("alice", Some(secret)).is_err());
        assert!(verify_user("alice.zz", Some(secret)).is_err());
        assert!(verify_user("", None).is_err());
    }

    #[test]
    fn regression_ipv6_clients_are_limited_per_network_not_per_address() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(limit_network(a, 64), "2001:db8:1:2::/64");
        assert_eq!(limit_network(a, 64), limit_network(b, 64));
        assert_ne!(limit_network(a, 64), limit_network(other, 64));
        assert_eq!(limit_network(a, 128), "2001:db8:1:2::1/128");
        assert_eq!(limit_network(a, 0), "::/0");
        let v4: IpAddr = "203.0.113.9".parse().unwrap();
        assert_eq!(limit_network(v4, 64), "203.0.113.9");
        let mapped: IpAddr = "::ffff:203.0.113.9".parse().unwrap();
        assert_eq!(limit_network(mapped, 64), "203.0.113.9");
    }
}
