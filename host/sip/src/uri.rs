//! SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966), borrowed from the text they were
//! parsed from: user, password, host (IPv6 in brackets), port, parameters and headers.

use crate::error::{ErrorKind, ParseError};
use crate::header::{CLASS, HOST, Params, SCHEME, URI_DELIMITER, URI_FORBIDDEN, is_uri_forbidden};

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

/// The length of `scheme` in `scheme ":"`, with scheme = ALPHA *( ALPHA / DIGIT / "+" /
/// "-" / "." ).
fn scheme_len(b: &[u8]) -> Option<usize> {
    if !b.first()?.is_ascii_alphabetic() {
        return None;
    }
    let colon = b.iter().position(|&c| CLASS[c as usize] & SCHEME == 0)?;
    (b[colon] == b':').then_some(colon)
}

/// `scheme ":"` (see [`scheme_len`]); returns the scheme and the rest.
pub(crate) fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let colon = scheme_len(s.as_bytes())?;
    Some((&s[..colon], &s[colon + 1..]))
}

/// Checks the shape any absolute URI must have: a scheme, something after it, and no
/// whitespace, controls, quotes or angle brackets. sip/sips/tel URIs are parsed fully.
pub(crate) fn validate_any_uri(s: &str, kind: ErrorKind) -> Result<(), ParseError> {
    match Uri::parse(s) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::UnsupportedScheme => {
            let rest = split_scheme(s).map_or("", |(_, rest)| rest);
            if rest.is_empty() || rest.bytes().any(is_uri_forbidden) {
                return Err(ParseError::new(
                    kind,
                    format!("invalid characters in URI {s:?}"),
                ));
            }
            Ok(())
        }
        Err(e) => Err(ParseError::new(kind, e.detail().to_owned())),
    }
}

/// Whether the scheme is sip, sips or tel (any case).
fn is_known_scheme(scheme: &[u8]) -> bool {
    // Setting bit 5 lowercases letters; the schemes compared are all letters.
    match *scheme {
        [a, b, c] => matches!(
            [a | 0x20, b | 0x20, c | 0x20],
            [b's', b'i', b'p'] | [b't', b'e', b'l']
        ),
        [a, b, c, d] => [a | 0x20, b | 0x20, c | 0x20, d | 0x20] == *b"sips",
        _ => false,
    }
}

fn uri_err(detail: String) -> ParseError {
    ParseError::new(ErrorKind::Uri, detail)
}

fn forbidden(s: &str) -> ParseError {
    uri_err(format!("whitespace, control or <>\" characters in {s:?}"))
}

/// Where a URI's parts sit in its text, as byte offsets. Found without slicing, so callers
/// that only check a URI (a name-addr's, the Request-URI) pay for no `&str` parts.
#[derive(Clone, Copy)]
pub(crate) struct Layout {
    scheme_end: usize,
    user: Option<(usize, usize)>,
    password: Option<(usize, usize)>,
    host: (usize, usize),
    port: Option<u16>,
    params: (usize, usize),
    headers: (usize, usize),
    /// Where the URI ends: at the first byte no URI holds, or the end of the text.
    pub(crate) end: usize,
}

impl Layout {
    /// Whether the URI has headers (`?name=value`), which a Request-URI must not carry.
    pub(crate) fn has_headers(&self) -> bool {
        self.headers.0 < self.headers.1
    }

    /// The parts, sliced from `s`, the text this layout was found in.
    fn uri<'a>(&self, s: &'a str) -> Uri<'a> {
        let part = |(start, end): (usize, usize)| s.get(start..end).unwrap_or("");
        Uri {
            scheme: part((0, self.scheme_end)),
            user: self.user.map(part),
            password: self.password.map(part),
            host: part(self.host),
            port: self.port,
            params: part(self.params),
            headers: part(self.headers),
        }
    }
}

/// `tel:number;params` (RFC 3966), the scheme ending at `scheme_end`: the number goes in
/// `user`.
fn tel_layout(s: &str, scheme_end: usize) -> Result<Layout, ParseError> {
    let b = s.as_bytes();
    let at = scheme_end + 1;
    let rest = b.get(at..).unwrap_or_default();
    let stop = at
        + rest
            .iter()
            .position(|&c| is_uri_forbidden(c))
            .unwrap_or(rest.len());
    let rest = b.get(at..stop).unwrap_or_default();
    let end = at + rest.iter().position(|&c| c == b';').unwrap_or(rest.len());
    if end == at {
        return Err(uri_err("tel URI without a number".into()));
    }
    check_params(s.get(end..stop).unwrap_or(""))?;
    Ok(Layout {
        scheme_end,
        user: Some((at, end)),
        password: None,
        host: (stop, stop),
        port: None,
        params: (end, stop),
        headers: (stop, stop),
        end: stop,
    })
}

/// Parses a whole `sip:`, `sips:` or `tel:` URI into its layout.
// Inlined: the Request-URI check calls it once per message; the call costs more than it.
#[inline(always)]
pub(crate) fn whole_layout(s: &str) -> Result<Layout, ParseError> {
    match layout(s)? {
        l if l.end == s.len() => Ok(l),
        _ => Err(forbidden(s)),
    }
}

/// Parses the URI at the start of `s`, up to the first byte no URI holds (whitespace,
/// controls, `<`, `>`, `"`); its layout says where it ended. A name-addr's URI is read this
/// way up to its `>`, in the same pass.
pub(crate) fn layout(s: &str) -> Result<Layout, ParseError> {
    // Index loops over one table: this runs for every URI of every message.
    let b = s.as_bytes();
    let n = b.len();
    let class = |i: usize| CLASS[b[i] as usize];
    let Some(scheme_end) = scheme_len(b) else {
        return Err(uri_err(format!("no scheme in {s:?}")));
    };
    let scheme = &b[..scheme_end];
    if !is_known_scheme(scheme) {
        return Err(ParseError::new(
            ErrorKind::UnsupportedScheme,
            format!("{:?}", s.get(..scheme_end).unwrap_or("")),
        ));
    }
    if scheme[0] | 0x20 == b't' {
        return tel_layout(s, scheme_end);
    }
    let rest_at = scheme_end + 1;
    // The first '@' ends the user part, which may hold ';', '?', '/' and ':' but never
    // an unescaped '@'; before it, the first ':' splits off a password.
    let (mut at, mut colon) = (None, None);
    let mut i = rest_at;
    while i < n {
        if class(i) & (URI_FORBIDDEN | URI_DELIMITER) != 0 {
            match b[i] {
                b'@' => {
                    at = Some(i);
                    break;
                }
                b':' if colon.is_none() => colon = Some(i),
                b':' | b';' | b'?' => {}
                _ => break,
            }
        }
        i += 1;
    }
    let (user, password, host_at) = match at {
        Some(at) => {
            let (user, password) = match colon {
                Some(c) => ((rest_at, c), Some((c + 1, at))),
                None => ((rest_at, at), None),
            };
            if user.0 == user.1 {
                return Err(uri_err(format!("empty user part in {s:?}")));
            }
            (Some(user), password, at + 1)
        }
        None => (None, None, rest_at),
    };
    let mut i = host_at;
    if b.get(i) == Some(&b'[') {
        let close = b[i..]
            .iter()
            .position(|&c| c == b']')
            .map(|c| i + c)
            .ok_or_else(|| uri_err(format!("unterminated IPv6 reference in {s:?}")))?;
        let inner = &b[i + 1..close];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&c| c.is_ascii_hexdigit() || c == b':' || c == b'.')
        {
            return Err(uri_err(format!("bad IPv6 reference in {s:?}")));
        }
        i = close + 1;
    } else {
        i += host_len(b.get(i..).unwrap_or_default());
    }
    let host = (host_at, i);
    if host_at == i {
        return Err(uri_err(format!("bad host in {s:?}")));
    }
    let mut port = None;
    if b.get(i) == Some(&b':') {
        let (mut value, start) = (0u32, i + 1);
        i = start;
        while i < n && b[i].is_ascii_digit() && i - start < 5 {
            value = value * 10 + u32::from(b[i] - b'0');
            i += 1;
        }
        if i == start || value > u32::from(u16::MAX) {
            return Err(uri_err(format!("bad port in {s:?}")));
        }
        port = Some(value as u16);
    }
    if i < n && !matches!(b[i], b';' | b'?') && class(i) & URI_FORBIDDEN == 0 {
        return Err(uri_err(format!("bad host or port in {s:?}")));
    }
    // Parameters up to '?' or the end: every ';' starts a named one.
    let params_at = i;
    while i < n && b[i] != b'?' && class(i) & URI_FORBIDDEN == 0 {
        if b[i] == b';' && matches!(b.get(i + 1), None | Some(b';') | Some(b'=')) {
            return Err(uri_err(format!("empty URI parameter in {s:?}")));
        }
        i += 1;
    }
    let params = (params_at, i);
    let mut headers = (i, i);
    if i < n && b[i] == b'?' {
        let start = i + 1;
        i = start;
        while i < n && class(i) & URI_FORBIDDEN == 0 {
            if b[i] == b'@' {
                return Err(uri_err(format!("unescaped '@' in URI headers of {s:?}")));
            }
            i += 1;
        }
        if i == start {
            return Err(uri_err(format!("empty headers after '?' in {s:?}")));
        }
        headers = (start, i);
    }
    Ok(Layout {
        scheme_end,
        user,
        password,
        host,
        port,
        params,
        headers,
        end: i,
    })
}

impl<'a> Uri<'a> {
    /// Parses a `sip:`, `sips:` or `tel:` URI. Other schemes give
    /// [`ErrorKind::UnsupportedScheme`].
    pub fn parse(s: &'a str) -> Result<Uri<'a>, ParseError> {
        Ok(whole_layout(s)?.uri(s))
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

/// How many host name bytes (see [`HOST`]) `b` starts with.
pub(crate) fn host_len(b: &[u8]) -> usize {
    // Host names run 10 to 30 bytes: sixteen at a time where they can be read.
    #[cfg(target_arch = "x86_64")]
    {
        let mut at = 0;
        while let Some(block) = b.get(at..at + 16) {
            let hosts = host_mask(block.try_into().unwrap_or(&[0; 16]));
            if hosts != u16::MAX {
                return at + hosts.trailing_ones() as usize;
            }
            at += 16;
        }
        at + host_len_scalar(b.get(at..).unwrap_or_default())
    }
    #[cfg(not(target_arch = "x86_64"))]
    host_len_scalar(b)
}

fn host_len_scalar(b: &[u8]) -> usize {
    b.iter()
        .position(|&c| CLASS[c as usize] & HOST == 0)
        .unwrap_or(b.len())
}

/// Bit `i` set where byte `i` of `block` is a host name byte: a letter (ASCII, any case), a
/// digit, `-`, `.` or `_`.
#[cfg(target_arch = "x86_64")]
fn host_mask(block: &[u8; 16]) -> u16 {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline, `block` is 16 readable bytes, and loadu
    // has no alignment requirement.
    let mask = unsafe {
        let set = |c: u8| _mm_set1_epi8(c as i8);
        let v = _mm_loadu_si128(block.as_ptr().cast());
        // Setting bit 5 lowercases letters and moves no other byte into `a..=z`; compares
        // are signed, so bytes from 0x80 up fall outside both ranges.
        let lower = _mm_or_si128(v, set(0x20));
        let letter = _mm_and_si128(
            _mm_cmpgt_epi8(lower, set(b'a' - 1)),
            _mm_cmplt_epi8(lower, set(b'z' + 1)),
        );
        let digit = _mm_and_si128(
            _mm_cmpgt_epi8(v, set(b'0' - 1)),
            _mm_cmplt_epi8(v, set(b'9' + 1)),
        );
        let mark = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, set(b'-')), _mm_cmpeq_epi8(v, set(b'.'))),
            _mm_cmpeq_epi8(v, set(b'_')),
        );
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(letter, digit), mark))
    };
    mask as u16
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

// Inlined: a port is a few digits, cheaper than the call.
#[inline(always)]
pub(crate) fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 {
        return None;
    }
    let mut value = 0u32;
    for c in p.bytes() {
        if !c.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(c - b'0');
    }
    u16::try_from(value).ok()
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
    fn host_scan_agrees_with_the_class_table() {
        for c in 0..=255u8 {
            for at in 0..20 {
                let mut text = vec![b'a'; 40];
                text[at] = c;
                let want = host_len_scalar(&text);
                assert_eq!(host_len(&text), want, "byte {c:#x} at {at}");
                assert_eq!(host_len(&text[..at + 1]), host_len_scalar(&text[..at + 1]));
            }
        }
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
