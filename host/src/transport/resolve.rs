//! Next hops: a SIP URI reduced to transport, host and port, and host names resolved through
//! the system resolver (RFC 3263 SRV/NAPTR is not done yet) with a short-lived cache.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use siphost_sip::{ParseError, Uri};

use super::TransportKind;

/// How long a resolved host name is reused.
const CACHE_TTL: Duration = Duration::from_secs(60);

/// Why a URI names no usable next hop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NextHopError {
    #[error("not a SIP URI: {uri:?} ({source})")]
    NotSipUri { uri: String, source: ParseError },
    #[error("unsupported URI scheme in {0:?}")]
    UnsupportedScheme(String),
    #[error("unsupported transport {0:?}")]
    UnsupportedTransport(String),
    #[error("no host in {0:?}")]
    NoHost(String),
}

/// Why a host name gave no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve {host}: {source}")]
    Lookup {
        host: String,
        source: std::io::Error,
    },
    #[error("{0} has no address")]
    NoAddress(String),
}

/// Where to send a request: from a Route or Request-URI, or a configured next hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    pub kind: TransportKind,
    pub host: String,
    pub port: u16,
}

impl NextHop {
    /// Reads transport (`;transport=`, default UDP), host and port (default 5060) from a SIP
    /// URI (`sip:host:port;transport=tcp`, or a name-addr `<sip:...>`).
    pub fn from_uri(uri: &str) -> Result<NextHop, NextHopError> {
        Self::from_uri_or(uri, TransportKind::Udp)
    }

    /// [`Self::from_uri`] with `default` for a URI that names no transport (the transport of
    /// the socket a request must leave from).
    pub fn from_uri_or(uri: &str, default: TransportKind) -> Result<NextHop, NextHopError> {
        let trimmed = uri.trim();
        let inner = match (trimmed.find('<'), trimmed.rfind('>')) {
            (Some(start), Some(end)) if start < end => trimmed.get(start + 1..end).unwrap_or(""),
            _ => trimmed,
        };
        let parsed = Uri::parse(inner).map_err(|source| NextHopError::NotSipUri {
            uri: inner.to_owned(),
            source,
        })?;
        if !parsed.scheme.eq_ignore_ascii_case("sip") {
            return Err(NextHopError::UnsupportedScheme(inner.to_owned()));
        }
        let kind = match parsed.param("transport").flatten() {
            Some(name) => TransportKind::parse(name)
                .ok_or_else(|| NextHopError::UnsupportedTransport(name.to_owned()))?,
            None => default,
        };
        let host = parsed.host;
        if host.is_empty() {
            return Err(NextHopError::NoHost(inner.to_owned()));
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(NextHop {
            kind,
            host,
            port: parsed.port.unwrap_or(5060),
        })
    }

    /// The address when the host is an IP literal.
    pub fn literal(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// A cache of host name resolutions; lookups themselves run off the core loop.
#[derive(Default)]
pub struct Resolver {
    cache: HashMap<(String, u16), (SocketAddr, Instant)>,
}

impl Resolver {
    /// The address of `hop` without waiting: IP literals and fresh cache entries.
    pub fn cached(&self, hop: &NextHop, now: Instant) -> Option<SocketAddr> {
        if let Some(addr) = hop.literal() {
            return Some(addr);
        }
        self.cache
            .get(&(hop.host.to_ascii_lowercase(), hop.port))
            .filter(|(_, at)| now.duration_since(*at) < CACHE_TTL)
            .map(|(addr, _)| *addr)
    }

    pub fn remember(&mut self, hop: &NextHop, addr: SocketAddr, now: Instant) {
        self.cache
            .insert((hop.host.to_ascii_lowercase(), hop.port), (addr, now));
    }

    /// Resolves through the system resolver (runs on a task of its own).
    pub async fn lookup(host: String, port: u16) -> Result<SocketAddr, ResolveError> {
        let looked_up = tokio::net::lookup_host((host.as_str(), port)).await;
        match looked_up.map(|mut addrs| addrs.next()) {
            Ok(Some(addr)) => Ok(addr),
            Ok(None) => Err(ResolveError::NoAddress(host)),
            Err(source) => Err(ResolveError::Lookup { host, source }),
        }
    }
}
