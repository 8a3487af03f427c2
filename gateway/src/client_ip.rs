//! The client's IP address for rate limiting and logs.
//!
//! Forwarding headers are written by whoever sends the request, so they are believed only when the socket
//! peer is one of our own proxies (`INGEST_TRUSTED_PROXIES`). `X-Forwarded-For` is read from the right:
//! each trusted proxy appends the address it saw, so the rightmost address that is not a trusted proxy is
//! the first one a trusted party vouched for; anything left of it may be forged.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::HeaderMap;

/// The client IP: `X-Forwarded-For` (rightmost untrusted hop) or `X-Real-IP`, honoured only when the socket
/// peer is a trusted proxy; otherwise the peer address.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &[TrustedNet]) -> IpAddr {
    let peer = peer.to_canonical();
    let trusted = |ip: IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(peer) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    if !forwarded.is_empty() {
        let mut nearest = peer;
        for hop in forwarded.iter().rev() {
            match parse_hop(hop) {
                Some(ip) if trusted(ip) => nearest = ip,
                Some(ip) => return ip,
                // Garbage in the chain: the last address a trusted proxy vouched for is the best we have.
                None => return nearest,
            }
        }
        // Every hop is one of ours (e.g. a health check from inside): the leftmost is the origin.
        return nearest;
    }
    headers
        .get("x-real-ip")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_hop)
        .unwrap_or(peer)
}

/// An address as proxies write it: bare, or with a port (`1.2.3.4:5678`, `[::1]:5678`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|sa| sa.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or a single address) whose peers are trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet {
    network: IpAddr,
    prefix_len: u8,
}

/// Why a network did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IP address or CIDR network (e.g. 10.0.0.0/8)")]
pub struct InvalidNet(String);

impl TrustedNet {
    /// Parses the comma-separated `INGEST_TRUSTED_PROXIES` setting; empty items are ignored.
    pub fn parse_list(s: &str) -> Result<Vec<TrustedNet>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse()
                    .map_err(|e| format!("INGEST_TRUSTED_PROXIES: {e}"))
            })
            .collect()
    }

    /// Whether `ip` lies in this network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask32(self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask128(self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask32(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

fn mask128(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0)
}

impl FromStr for TrustedNet {
    type Err = InvalidNet;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidNet(s.to_owned());
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr = addr
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| invalid())?
            .to_canonical();
        let max_len = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max_len)
                .ok_or_else(invalid)?,
            None => max_len,
        };
        // Store the network address itself so `contains` is one mask and compare.
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(prefix_len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(prefix_len)).into()),
        };
        Ok(Self {
            network,
            prefix_len,
        })
    }
}

impl fmt::Display for TrustedNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address should parse")
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, http::HeaderValue::from_static(value));
        }
        map
    }

    fn proxies() -> Vec<TrustedNet> {
        TrustedNet::parse_list("127.0.0.1, 10.0.0.0/8,::1/128").expect("list should parse")
    }

    #[test]
    fn parses_networks_and_matches_by_prefix() {
        let nets = proxies();
        assert_eq!(nets.len(), 3);
        assert_eq!(nets[1].to_string(), "10.0.0.0/8");
        assert!(nets[0].contains(ip("127.0.0.1")));
        assert!(!nets[0].contains(ip("127.0.0.2")));
        assert!(nets[1].contains(ip("10.255.1.2")));
        assert!(!nets[1].contains(ip("11.0.0.1")));
        assert!(nets[2].contains(ip("::1")));
        assert!(!nets[2].contains(ip("::2")));
        assert!(
            nets[0].contains(ip("::ffff:127.0.0.1")),
            "IPv4-mapped peers count as IPv4"
        );
        let host_bits: TrustedNet = "192.168.1.77/24".parse().expect("should parse");
        assert_eq!(host_bits.to_string(), "192.168.1.0/24");
        let all: TrustedNet = "0.0.0.0/0".parse().expect("should parse");
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        let v6: TrustedNet = "fd00::/8".parse().expect("should parse");
        assert!(v6.contains(ip("fd12:3456::1")) && !v6.contains(ip("fe80::1")));
        assert_eq!(TrustedNet::parse_list(" , ").map(|v| v.len()), Ok(0));
    }

    #[test]
    fn parse_errors_name_the_setting() {
        for bad in [
            "10.0.0.0/33",
            "::1/129",
            "example.com",
            "10.0.0.0/",
            "1.2.3.4/-1",
        ] {
            let err = TrustedNet::parse_list(&format!("127.0.0.1,{bad}")).expect_err(bad);
            assert!(err.starts_with("INGEST_TRUSTED_PROXIES"), "{err}");
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("x-real-ip", "2.2.2.2")]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &proxies()),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &[]), ip("127.0.0.1"));
    }

    #[test]
    fn forwarded_for_takes_the_rightmost_untrusted_hop() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 1.1.1.1, 10.0.0.5")]);
        assert_eq!(client_ip(ip("127.0.0.1"), &h, &proxies()), ip("1.1.1.1"));
        // Several header lines form one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "1.1.1.1:4321, 10.0.0.5"),
        ]);
        assert_eq!(client_ip(ip("::1"), &h, &proxies()), ip("1.1.1.1"));
        let h = headers(&[("x-forwarded-for", "[2001:db8::1]:443")]);
        assert_eq!(
            client_ip(ip("::ffff:10.1.1.1"), &h, &proxies()),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn forwarded_for_edge_cases() {
        let all_ours = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.5")]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &all_ours, &proxies()),
            ip("10.0.0.7")
        );
        let garbage = headers(&[("x-forwarded-for", "1.1.1.1, nonsense, 10.0.0.5")]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &garbage, &proxies()),
            ip("10.0.0.5")
        );
        let empty = headers(&[("x-forwarded-for", "")]);
        assert_eq!(
            client_ip(ip("127.0.0.1"), &empty, &proxies()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn real_ip_is_used_without_forwarded_for() {
        let h = headers(&[("x-real-ip", " 2.2.2.2 ")]);
        assert_eq!(client_ip(ip("10.9.9.9"), &h, &proxies()), ip("2.2.2.2"));
        let bad = headers(&[("x-real-ip", "not-an-ip")]);
        assert_eq!(client_ip(ip("10.9.9.9"), &bad, &proxies()), ip("10.9.9.9"));
        assert_eq!(
            client_ip(ip("10.9.9.9"), &HeaderMap::new(), &proxies()),
            ip("10.9.9.9")
        );
    }
}
