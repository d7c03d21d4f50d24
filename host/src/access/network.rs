//! Source networks in CIDR form (IPv4 and IPv6) and the address test endpoints are
//! identified by; IPv4-mapped IPv6 sources count as their IPv4 address.

use std::net::IpAddr;

/// An address prefix such as `10.0.0.0/8` or `2001:db8::/32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

/// Why a network entry is not CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkError {
    #[error("{0:?} is not an IPv4 or IPv6 address")]
    Address(String),
    #[error("prefix length {0:?} is not a number up to {1}")]
    Prefix(String, u8),
}

impl Network {
    /// Parses `address/prefix`; a bare address is a single host (/32, /128). Host bits
    /// below the prefix are ignored.
    pub fn parse(text: &str) -> Result<Network, NetworkError> {
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let base: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| NetworkError::Address(address.to_owned()))?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| NetworkError::Prefix(p.to_owned(), max))?,
        };
        Ok(Network { base, prefix })
    }

    /// Whether `address` lies in this network.
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.base, canonical(address)) {
            (IpAddr::V4(base), IpAddr::V4(a)) => {
                same_prefix(u32::from(base).into(), u32::from(a).into(), self.prefix, 32)
            }
            (IpAddr::V6(base), IpAddr::V6(a)) => {
                same_prefix(u128::from(base), u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`, seen on dual-stack sockets) as plain IPv4.
pub fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn same_prefix(a: u128, b: u128, prefix: u8, width: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(width - prefix);
    (a >> shift) == (b >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn ipv4_prefixes() {
        let net = Network::parse("10.1.0.0/16").expect("net");
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.2.3")), "mapped v6 is v4");
        let host = Network::parse("127.0.0.1").expect("host");
        assert!(host.contains(ip("127.0.0.1")));
        assert!(!host.contains(ip("127.0.0.2")));
        assert!(
            Network::parse("0.0.0.0/0")
                .expect("all")
                .contains(ip("192.0.2.1"))
        );
    }

    #[test]
    fn ipv6_prefixes_and_families_do_not_mix() {
        let net = Network::parse("2001:db8::/32").expect("net");
        assert!(net.contains(ip("2001:db8:ffff::1")));
        assert!(!net.contains(ip("2001:db9::1")));
        assert!(!net.contains(ip("10.0.0.1")));
        assert!(Network::parse("::1/128").expect("lo").contains(ip("::1")));
        assert!(!Network::parse("0.0.0.0/0").expect("v4").contains(ip("::1")));
    }

    #[test]
    fn bad_entries_say_why() {
        assert_eq!(
            Network::parse("10.0.0.0/33"),
            Err(NetworkError::Prefix("33".into(), 32))
        );
        assert!(matches!(
            Network::parse("example.com/8"),
            Err(NetworkError::Address(_))
        ));
        assert!(Network::parse("::/129").is_err());
    }
}
