//! Via header values (RFC 3261 §20.42): transport, sent-by host and port, and parameters
//! such as branch, received and rport (RFC 3581).

use crate::error::{ErrorKind, ParseError};
use crate::header::{Params, eq_ignore_case, is_token_byte, trim_lws, walk_params};
use crate::message::{Span, at_span, span_in};
use crate::uri::{host_len, parse_port};

/// One Via value, e.g. `SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776;rport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    /// The protocol name, normally `SIP`.
    pub protocol: &'a str,
    /// The protocol version, normally `2.0`.
    pub version: &'a str,
    /// The transport as written: `UDP`, `TCP`, `TLS`, `SCTP`, `WS`...
    pub transport: &'a str,
    /// The sent-by host (IPv6 in brackets).
    pub host: &'a str,
    /// The sent-by port, if given.
    pub port: Option<u16>,
    params: &'a str,
    branch: Option<&'a str>,
}

/// A validated Via value's parts as offsets into its header value.
#[derive(Debug, Clone)]
pub(crate) struct ViaSpans {
    protocol: Span,
    version: Span,
    transport: Span,
    host: Span,
    port: Option<u16>,
    params: Span,
    branch: Option<Span>,
}

fn err(detail: String) -> ParseError {
    ParseError::new(ErrorKind::Via, detail)
}

/// Reads a token after optional LWS; returns it and the rest.
fn token(s: &str) -> Option<(&str, &str)> {
    let s = trim_lws_start(s);
    let end = s
        .as_bytes()
        .iter()
        .position(|&b| !is_token_byte(b))
        .unwrap_or(s.len());
    if end == 0 {
        None
    } else {
        Some((&s[..end], &s[end..]))
    }
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_lws_start(s: &str) -> &str {
    let n = s.as_bytes().iter().take_while(|&&b| is_lws(b)).count();
    &s[n..]
}

fn slash(s: &str) -> Option<&str> {
    trim_lws_start(s).strip_prefix('/')
}

impl<'a> Via<'a> {
    /// Parses one Via value (not a comma-separated list); LWS is allowed around `/`, `:`,
    /// `;` and `=` as RFC 3261 permits.
    pub fn parse(s: &'a str) -> Result<Via<'a>, ParseError> {
        Self::parse_with(s, true)
    }

    /// Splits a value already validated by [`crate::Message::parse`] without re-checking
    /// its parameters.
    pub(crate) fn parse_validated(s: &'a str) -> Result<Via<'a>, ParseError> {
        Self::parse_with(s, false)
    }

    fn parse_with(s: &'a str, validate: bool) -> Result<Via<'a>, ParseError> {
        let bad = || err(format!("expected protocol/version/transport in {s:?}"));
        let (protocol, rest) = token(s).ok_or_else(bad)?;
        let (version, rest) = slash(rest).and_then(token).ok_or_else(bad)?;
        let (transport, rest) = slash(rest).and_then(token).ok_or_else(bad)?;
        if !rest.as_bytes().first().is_some_and(|&b| is_lws(b)) {
            return Err(err(format!("no whitespace before sent-by in {s:?}")));
        }
        let rest = trim_lws_start(rest);
        let host_len = if rest.starts_with('[') {
            rest.find(']')
                .map(|i| i + 1)
                .ok_or_else(|| err(format!("unterminated IPv6 sent-by in {s:?}")))?
        } else {
            host_len(rest.as_bytes())
        };
        let host = &rest[..host_len];
        if host.is_empty() || (host.starts_with('[') && host.len() < 3) {
            return Err(err(format!("empty sent-by host in {s:?}")));
        }
        let mut rest = trim_lws_start(&rest[host_len..]);
        let mut port = None;
        if let Some(p) = rest.strip_prefix(':') {
            let p = trim_lws_start(p);
            let end = p
                .bytes()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(p.len());
            port = Some(
                parse_port(&p[..end]).ok_or_else(|| err(format!("bad sent-by port in {s:?}")))?,
            );
            rest = &p[end..];
        }
        let params = trim_lws(rest);
        let mut branch = None;
        if validate {
            let mut rport = None;
            walk_params(params, ErrorKind::Via, |name, value| match name.len() {
                6 if branch.is_none() && eq_ignore_case(name.as_bytes(), b"branch") => {
                    branch = Some(value);
                }
                5 if rport.is_none() && eq_ignore_case(name.as_bytes(), b"rport") => {
                    rport = Some(value);
                }
                _ => {}
            })?;
            if let Some(Some(rport)) = rport
                && parse_port(rport).is_none()
            {
                return Err(err(format!("bad rport value {rport:?}")));
            }
        } else {
            branch = Params::new(params).get("branch");
        }
        Ok(Via {
            protocol,
            version,
            transport,
            host,
            port,
            params,
            branch: branch.flatten(),
        })
    }

    /// Where this value's parts sit in `within`, the header value it was parsed from.
    pub(crate) fn locate(&self, within: &str) -> ViaSpans {
        ViaSpans {
            protocol: span_in(within, self.protocol),
            version: span_in(within, self.version),
            transport: span_in(within, self.transport),
            host: span_in(within, self.host),
            port: self.port,
            params: span_in(within, self.params),
            branch: self.branch.map(|b| span_in(within, b)),
        }
    }

    /// The value [`Via::locate`] described, read back from the same text.
    pub(crate) fn relocate(within: &'a str, at: &ViaSpans) -> Via<'a> {
        Via {
            protocol: at_span(within, at.protocol),
            version: at_span(within, at.version),
            transport: at_span(within, at.transport),
            host: at_span(within, at.host),
            port: at.port,
            params: at_span(within, at.params),
            branch: at.branch.map(|b| at_span(within, b)),
        }
    }

    /// The `branch` parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.branch
    }

    /// The `received` parameter.
    pub fn received(&self) -> Option<&'a str> {
        self.param("received").flatten()
    }

    /// `None` if there is no `rport`, `Some(None)` for a bare `;rport` (a request for
    /// symmetric response routing), `Some(Some(port))` once filled in.
    pub fn rport(&self) -> Option<Option<u16>> {
        self.param("rport").map(|v| v.and_then(parse_port))
    }

    /// The first parameter named `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params().get(name)
    }

    /// All parameters in order.
    pub fn params(&self) -> Params<'a> {
        Params::new(self.params)
    }

    /// Whether the branch carries the RFC 3261 magic cookie `z9hG4bK`.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_via_with_spaces_everywhere() {
        let v = Via::parse("SIP  /   2.0 /UDP\t    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(
            (v.protocol, v.version, v.transport, v.host, v.port),
            ("SIP", "2.0", "UDP", "192.0.2.2", None)
        );
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.host, "spindle.example.com");
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        assert!(v.has_rfc3261_branch());
    }

    #[test]
    fn ipv6_port_rport_received() {
        let v = Via::parse("SIP/2.0/TLS [2001:db8::9]:5061;rport;received=192.0.2.1").unwrap();
        assert_eq!(v.host, "[2001:db8::9]");
        assert_eq!(v.port, Some(5061));
        assert_eq!(v.rport(), Some(None));
        assert_eq!(v.received(), Some("192.0.2.1"));
        let v = Via::parse("SIP/2.0/UDP h:5060;rport=1234").unwrap();
        assert_eq!(v.rport(), Some(Some(1234)));
        assert_eq!(Via::parse("SIP/2.0/UDP h").unwrap().rport(), None);
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "SIP/2.0/UDP",
            "SIP/2.0 h",
            "SIP/2.0/UDP 192.0.2.15;;",
            ";",
            "SIP/2.0/UDP h:99999",
            "SIP/2.0/UDP h;rport=x",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }
}
