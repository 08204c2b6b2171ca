//! Who the client is when the gateway sits behind load balancers or ingresses
//! (`server.trusted_proxies`). The TCP peer is the client unless it is a
//! trusted proxy; then `X-Forwarded-For` is read from the right (each proxy
//! appends the address it received from), skipping trusted hops, and the
//! first address that is not a trusted proxy is the client. What the client
//! itself wrote in the header is never believed, since it sits left of an
//! address a trusted proxy appended.

use std::net::IpAddr;
use std::str::FromStr;

use http::HeaderMap;
use ipnet::IpNet;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated CIDRs or addresses (an address is its own /32 or /128).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s.split(',').map(str::trim).filter(|p| !p.is_empty()))
    }
}

impl TrustedProxies {
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let nets = items
            .into_iter()
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map(|n| n.trunc())
                    .map_err(|_| format!("`{item}` is not an IP address or a CIDR"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client's address for a request from `peer` with these headers.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for hop in forwarded_for(headers).rev() {
            match parse_hop(hop) {
                Some(ip) if self.trusts(ip) => client = ip,
                Some(ip) => return ip,
                // Garbage left of the trusted hops: nothing further is believed.
                None => return client,
            }
        }
        client
    }

    /// `X-Forwarded-For` for the upstream: the chain the trusted proxies built
    /// (what a client wrote before the first trusted hop dropped), then `peer`.
    pub fn forwarded_for(&self, peer: IpAddr, headers: &HeaderMap) -> String {
        let peer = canonical(peer);
        let mut kept = Vec::new();
        // An untrusted peer's header is not read at all: the peer is the chain.
        if self.trusts(peer) {
            for hop in forwarded_for(headers).rev() {
                match parse_hop(hop) {
                    Some(ip) if self.trusts(ip) => kept.push(ip),
                    Some(ip) => {
                        kept.push(ip);
                        break;
                    }
                    None => break,
                }
            }
        }
        let mut out = String::with_capacity(16 * (kept.len() + 1));
        for ip in kept.iter().rev() {
            push_ip(&mut out, *ip);
            out.push_str(", ");
        }
        push_ip(&mut out, peer);
        out
    }

    /// The scheme the client used: what a trusted proxy says in
    /// `X-Forwarded-Proto`, else `own` (the listener's).
    pub fn forwarded_proto<'a>(
        &self,
        peer: IpAddr,
        headers: &'a HeaderMap,
        own: &'a str,
    ) -> &'a str {
        if !self.trusts(peer) {
            return own;
        }
        headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .filter(|p| p.eq_ignore_ascii_case("https") || p.eq_ignore_ascii_case("http"))
            .unwrap_or(own)
    }
}

/// IPv4 seen through an IPv6 socket (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn forwarded_for(headers: &HeaderMap) -> impl DoubleEndedIterator<Item = &str> {
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    hops.into_iter()
}

/// `ip` as text, an IPv4 address written without `fmt`: its `Display` (it
/// pads and aligns) cost ~1.5k instructions on every proxied request.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write;
            let _ = write!(out, "{v6}");
        }
    }
}

/// One hop: an address, or one with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| canonical(a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_is_written_as_its_display_writes_it() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "10.2.30.4",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let mut out = String::new();
            push_ip(&mut out, ip(text));
            assert_eq!(out, ip(text).to_string());
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let h = headers(&["6.6.6.6"]);
        assert_eq!(t.client_ip(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        assert_eq!(t.forwarded_for(ip("203.0.113.9"), &h), "203.0.113.9");
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(ip("10.1.1.1"), &h), ip("10.1.1.1"));
    }

    #[test]
    fn through_trusted_hops_the_first_untrusted_address_from_the_right_is_the_client() {
        let t: TrustedProxies = "10.0.0.0/8, 192.168.1.1".parse().unwrap();
        // The client forged 6.6.6.6; the ingress appended the real 198.51.100.7.
        let h = headers(&["6.6.6.6, 198.51.100.7", "10.2.2.2"]);
        assert_eq!(t.client_ip(ip("192.168.1.1"), &h), ip("198.51.100.7"));
        assert_eq!(
            t.forwarded_for(ip("192.168.1.1"), &h),
            "198.51.100.7, 10.2.2.2, 192.168.1.1"
        );
        // Only trusted hops: the leftmost of them.
        let h = headers(&["10.3.3.3"]);
        assert_eq!(t.client_ip(ip("10.1.1.1"), &h), ip("10.3.3.3"));
        // No header: the proxy itself.
        assert_eq!(t.client_ip(ip("10.1.1.1"), &headers(&[])), ip("10.1.1.1"));
        // Garbage stops the walk at the last trusted hop.
        let h = headers(&["1.1.1.1, junk, 10.4.4.4"]);
        assert_eq!(t.client_ip(ip("10.1.1.1"), &h), ip("10.4.4.4"));
        // Ports and mapped addresses.
        let h = headers(&["[2001:db8::1]:443, 198.51.100.8:1234"]);
        assert_eq!(t.client_ip(ip("::ffff:10.0.0.1"), &h), ip("198.51.100.8"));
    }

    #[test]
    fn the_scheme_is_believed_only_from_a_trusted_proxy() {
        let t: TrustedProxies = "127.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(t.forwarded_proto(ip("127.0.0.1"), &h, "http"), "https");
        assert_eq!(t.forwarded_proto(ip("127.0.0.2"), &h, "http"), "http");
    }

    #[test]
    fn bad_entries_are_named() {
        let e = "10.0.0.0/8, nope".parse::<TrustedProxies>().unwrap_err();
        assert!(e.contains("`nope`"), "{e}");
    }
}
