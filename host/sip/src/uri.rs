//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), borrowed from the text they were
//! parsed from: user, password, host (IPv6 in brackets), port, parameters and headers.

use crate::error::{ErrorKind, ParseError};
use crate::header::{Params, eq_ignore_case, find_byte, is_host_byte, is_uri_forbidden};

/// A parsed `sip:`, `sips:` or `tel:` URI borrowing from its text.
///
/// For `tel:` URIs the telephone number is in `user` and `host` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri<'a> {
    /// `sip`, `sips` or `tel`, as written.
    pub scheme: &'a str,
    /// The user part (still %-escaped), if any.
    pub user: Option<&'a str>,
    /// The password after `user:`, if any.
    pub password: Option<&'a str>,
    /// Host name, IPv4 address or bracketed IPv6 reference (`[2001:db8::1]`).
    pub host: &'a str,
    /// Explicit port, if any.
    pub port: Option<u16>,
    params: &'a str,
    headers: &'a str,
}

/// `scheme ":"` with scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ); returns the scheme
/// and the rest.
pub(crate) fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    if !b.first()?.is_ascii_alphabetic() {
        return None;
    }
    let colon = b
        .iter()
        .position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))?;
    if b[colon] != b':' {
        return None;
    }
    Some((&s[..colon], &s[colon + 1..]))
}

/// Checks the shape any absolute URI must have: a scheme, something after it, and no
/// whitespace, controls, quotes or angle brackets. sip/sips/tel URIs are parsed fully.
pub(crate) fn validate_any_uri(s: &str, kind: ErrorKind) -> Result<(), ParseError> {
    let Some((scheme, rest)) = split_scheme(s) else {
        return Err(ParseError::new(kind, format!("no URI scheme in {s:?}")));
    };
    if is_known_scheme(scheme) {
        return Uri::parse(s)
            .map(|_| ())
            .map_err(|e| ParseError::new(kind, e.detail().to_owned()));
    }
    if rest.is_empty() || rest.bytes().any(is_uri_forbidden) {
        return Err(ParseError::new(
            kind,
            format!("invalid characters in URI {s:?}"),
        ));
    }
    Ok(())
}

pub(crate) fn is_known_scheme(scheme: &str) -> bool {
    match scheme.len() {
        3 => eq_ignore_case(scheme.as_bytes(), b"sip") || eq_ignore_case(scheme.as_bytes(), b"tel"),
        4 => eq_ignore_case(scheme.as_bytes(), b"sips"),
        _ => false,
    }
}

fn uri_err(detail: String) -> ParseError {
    ParseError::new(ErrorKind::Uri, detail)
}

impl<'a> Uri<'a> {
    /// Parses a `sip:`, `sips:` or `tel:` URI. Other schemes give
    /// [`ErrorKind::UnsupportedScheme`].
    pub fn parse(s: &'a str) -> Result<Uri<'a>, ParseError> {
        let Some((scheme, rest)) = split_scheme(s) else {
            return Err(uri_err(format!("no scheme in {s:?}")));
        };
        if !is_known_scheme(scheme) {
            return Err(ParseError::new(
                ErrorKind::UnsupportedScheme,
                format!("{scheme:?}"),
            ));
        }
        // One pass: forbidden characters, and the first '@' (the user part may contain ';',
        // '?', '/' and ':' but never an unescaped '@', so the first one ends it).
        let rb = rest.as_bytes();
        // Branch-free over the whole URI so the compiler can vectorize it.
        if rb.iter().fold(false, |bad, &c| bad | is_uri_forbidden(c)) {
            return Err(uri_err(format!(
                "whitespace, control or <>\" characters in {s:?}"
            )));
        }
        // URIs are short: a plain scan beats memchr's per-call setup.
        let at = rb.iter().position(|&c| c == b'@');
        if eq_ignore_case(scheme.as_bytes(), b"tel") {
            let end = find_byte(rest, b';').unwrap_or(rest.len());
            let number = &rest[..end];
            if number.is_empty() {
                return Err(uri_err("tel URI without a number".into()));
            }
            let params = &rest[end..];
            check_params(params)?;
            return Ok(Uri {
                scheme,
                user: Some(number),
                password: None,
                host: "",
                port: None,
                params,
                headers: "",
            });
        }
        let (userinfo, hostpart) = match at {
            Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(ui) => {
                let (user, password) = match find_byte(ui, b':') {
                    Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                    None => (ui, None),
                };
                if user.is_empty() {
                    return Err(uri_err(format!("empty user part in {s:?}")));
                }
                (Some(user), password)
            }
            None => (None, None),
        };
        let hostport_end = hostpart
            .bytes()
            .position(|c| c == b';' || c == b'?')
            .unwrap_or(hostpart.len());
        let (host, port) = split_hostport(&hostpart[..hostport_end])?;
        let after = &hostpart[hostport_end..];
        let (params, headers) = match find_byte(after, b'?') {
            Some(q) => {
                let headers = &after[q + 1..];
                if headers.is_empty() {
                    return Err(uri_err(format!("empty headers after '?' in {s:?}")));
                }
                if find_byte(headers, b'@').is_some() {
                    return Err(uri_err(format!("unescaped '@' in URI headers of {s:?}")));
                }
                (&after[..q], headers)
            }
            None => (after, ""),
        };
        check_params(params)?;
        Ok(Uri {
            scheme,
            user,
            password,
            host,
            port,
            params,
            headers,
        })
    }

    /// Parameters in order: `(name, value)`, value `None` for flags like `lr`.
    pub fn params(&self) -> Params<'a> {
        Params::new(self.params)
    }

    /// The first parameter named `name` (case-insensitive): `None` if absent,
    /// `Some(None)` if present without a value.
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params().get(name)
    }

    /// The raw parameter text, starting with `;` (empty if none).
    pub fn params_str(&self) -> &'a str {
        self.params
    }

    /// URI headers after `?`, as `(name, value)` pairs (still %-escaped).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + use<'a> {
        self.headers
            .split('&')
            .filter(|h| !h.is_empty())
            .map(|h| match h.find('=') {
                Some(eq) => (&h[..eq], &h[eq + 1..]),
                None => (h, ""),
            })
    }

    /// Whether the URI has headers (`?name=value`), which a Request-URI must not carry.
    pub fn has_headers(&self) -> bool {
        !self.headers.is_empty()
    }

    /// Whether the URI carries the `lr` parameter (a loose router, RFC 3261 §16.12).
    pub fn is_loose_route(&self) -> bool {
        self.param("lr").is_some()
    }

    /// Whether the scheme is `sips`.
    pub fn is_secure(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("sips")
    }

    /// The `transport` parameter, if any.
    pub fn transport(&self) -> Option<&'a str> {
        self.param("transport").flatten()
    }
}

/// Every `;` must start a parameter with a non-empty name.
fn check_params(params: &str) -> Result<(), ParseError> {
    let b = params.as_bytes();
    for (i, _) in b.iter().enumerate().filter(|(_, c)| **c == b';') {
        if matches!(b.get(i + 1), None | Some(b';') | Some(b'=')) {
            return Err(uri_err(format!("empty URI parameter in {params:?}")));
        }
    }
    Ok(())
}

/// Splits `host[:port]`; validates the host and the port.
pub(crate) fn split_hostport(hostport: &str) -> Result<(&str, Option<u16>), ParseError> {
    let (host, port) = if hostport.starts_with('[') {
        let Some(close) = find_byte(hostport, b']') else {
            return Err(uri_err(format!(
                "unterminated IPv6 reference in {hostport:?}"
            )));
        };
        let inner = &hostport[1..close];
        if inner.is_empty()
            || !inner
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return Err(uri_err(format!("bad IPv6 reference {hostport:?}")));
        }
        let rest = &hostport[close + 1..];
        let port = match rest.strip_prefix(':') {
            Some(p) => Some(p),
            None if rest.is_empty() => None,
            None => {
                return Err(uri_err(format!(
                    "junk after IPv6 reference in {hostport:?}"
                )));
            }
        };
        (&hostport[..close + 1], port)
    } else {
        let (host, port) = match find_byte(hostport, b':') {
            Some(c) => (&hostport[..c], Some(&hostport[c + 1..])),
            None => (hostport, None),
        };
        if host.is_empty() || !host.bytes().all(is_host_byte) {
            return Err(uri_err(format!("bad host {host:?}")));
        }
        (host, port)
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).ok_or_else(|| uri_err(format!("bad port {p:?}")))?),
    };
    Ok((host, port))
}

pub(crate) fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_sip_uri() {
        let u = Uri::parse("sips:alice:secret@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi&x=y")
            .unwrap();
        assert_eq!(u.scheme, "sips");
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("secret"));
        assert_eq!(u.host, "[2001:db8::1]");
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.is_loose_route());
        assert!(u.is_secure());
        assert_eq!(
            u.headers().collect::<Vec<_>>(),
            [("Subject", "hi"), ("x", "y")]
        );
    }

    #[test]
    fn user_part_may_hold_reserved_characters() {
        let s = "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com";
        let u = Uri::parse(s).unwrap();
        assert_eq!(
            u.user,
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password,
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        assert_eq!(u.host, "example.com");
        assert_eq!(u.port, None);
    }

    #[test]
    fn tel_and_rejections() {
        let t = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        assert_eq!(t.user, Some("+1-201-555-0123"));
        assert_eq!(t.param("phone-context"), Some(Some("example.com")));
        assert_eq!(
            Uri::parse("http://x").unwrap_err().kind(),
            ErrorKind::UnsupportedScheme
        );
        assert!(Uri::parse("sip:user@example.com; lr").is_err());
        assert!(Uri::parse("sip:host:99999").is_err());
        assert!(Uri::parse("sip:[::1").is_err());
        assert!(Uri::parse("sip:").is_err());
        assert!(Uri::parse("<sip:a@b>").is_err());
        assert!(Uri::parse("sip:a@b;;").is_err());
    }
}
