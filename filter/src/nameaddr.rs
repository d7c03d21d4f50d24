//! Just enough SIP syntax for From/To and Route values: the parts of a name-addr
//! (display, URI, header params) and of a SIP URI, located by byte offsets.

use std::ops::Range;

/// A From/To style header value split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name as written (quotes included), without surrounding spaces.
    pub display: Option<Range<usize>>,
    /// Where a display starts (first non-space byte of the value).
    pub start: usize,
    /// Offset of `<`, when the URI is in angle brackets.
    pub lt: Option<usize>,
    /// The URI itself.
    pub uri: Range<usize>,
    /// First byte after the URI (after `>` when bracketed): the header parameters.
    pub rest: usize,
}

impl NameAddr {
    /// Splits a header value; `None` when it has no URI or an unclosed quote / bracket.
    pub fn parse(value: &str) -> Option<NameAddr> {
        let bytes = value.as_bytes();
        let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
        let mut i = start;
        let mut display_end = start;
        if bytes[i] == b'"' {
            i += 1;
            loop {
                match bytes.get(i)? {
                    b'\\' => i += 2,
                    b'"' => break,
                    _ => i += 1,
                }
            }
            i += 1;
            display_end = i;
        }
        let lt = bytes[i..].iter().position(|&b| b == b'<').map(|p| p + i);
        match lt {
            Some(lt) => {
                if display_end == start {
                    display_end = start + value[start..lt].trim_end().len();
                } else if !value[display_end..lt].trim().is_empty() {
                    return None;
                }
                let gt = bytes[lt..].iter().position(|&b| b == b'>')? + lt;
                let uri = lt + 1..gt;
                if uri.is_empty() {
                    return None;
                }
                Some(NameAddr {
                    display: (display_end > start).then_some(start..display_end),
                    start,
                    lt: Some(lt),
                    uri,
                    rest: gt + 1,
                })
            }
            None if display_end > start => None,
            None => {
                let end = bytes[start..]
                    .iter()
                    .position(|&b| b == b';' || b.is_ascii_whitespace() || b == b',')
                    .map_or(bytes.len(), |p| p + start);
                Some(NameAddr {
                    display: None,
                    start,
                    lt: None,
                    uri: start..end,
                    rest: end,
                })
            }
        }
    }

    pub fn uri<'a>(&self, value: &'a str) -> &'a str {
        &value[self.uri.clone()]
    }

    pub fn display<'a>(&self, value: &'a str) -> Option<&'a str> {
        self.display.clone().map(|r| &value[r])
    }

    /// A header parameter (e.g. `tag`) after the URI.
    pub fn param<'a>(&self, value: &'a str, name: &str) -> Option<&'a str> {
        param_in(&value[self.rest..], name)
    }
}

/// The value of `;name=value` (or `""` for a flag) in a parameter list.
pub fn param_in<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=').unwrap_or((p, ""));
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_end_matches('>').trim())
    })
}

/// The URI parameters of a Route / Record-Route value (`<sip:h;lr;ftag=x>` → `;lr;ftag=x`).
pub fn route_params(route: &str) -> &str {
    let inner = match (route.find('<'), route.rfind('>')) {
        (Some(a), Some(b)) if a < b => &route[a + 1..b],
        _ => route,
    };
    inner.find(';').map_or("", |p| &inner[p..])
}

/// The user, host and port of a SIP URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriParts<'a> {
    pub user: Option<&'a str>,
    pub host: &'a str,
    pub port: Option<&'a str>,
    pub secure: bool,
}

impl<'a> UriParts<'a> {
    pub fn parse(uri: &'a str) -> Option<UriParts<'a>> {
        let (scheme, rest) = uri.split_once(':')?;
        let secure = scheme.eq_ignore_ascii_case("sips");
        let end = rest.find([';', '?']).unwrap_or(rest.len());
        let rest = &rest[..end];
        let (user, hostport) = match rest.rfind('@') {
            Some(at) => {
                let userinfo = &rest[..at];
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                (Some(user), &rest[at + 1..])
            }
            None => (None, rest),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let close = v6.find(']')?;
            let port = v6[close + 1..].strip_prefix(':');
            (&hostport[..close + 2], port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        Some(UriParts {
            user,
            host,
            port,
            secure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_display_with_brackets_and_tag() {
        let v = r#""Alice \"A\"" <sip:alice@example.com>;tag=ab"#;
        let na = NameAddr::parse(v).unwrap();
        assert_eq!(na.display(v), Some(r#""Alice \"A\"""#));
        assert_eq!(na.uri(v), "sip:alice@example.com");
        assert_eq!(na.param(v, "tag"), Some("ab"));
    }

    #[test]
    fn token_display_and_bare_uri() {
        let v = "Bob Smith <sip:bob@b>";
        let na = NameAddr::parse(v).unwrap();
        assert_eq!(na.display(v), Some("Bob Smith"));
        let v = "sip:1000@pbx.local;tag=x";
        let na = NameAddr::parse(v).unwrap();
        assert_eq!((na.display(v), na.uri(v)), (None, "sip:1000@pbx.local"));
        assert_eq!(na.param(v, "TAG"), Some("x"));
        assert_eq!(na.param(v, "other"), None);
    }

    #[test]
    fn broken_values_are_refused() {
        for v in [
            "",
            "  ",
            "\"open <sip:a@b>",
            "<sip:a@b",
            "<>",
            "\"x\" sip:a@b",
        ] {
            assert_eq!(NameAddr::parse(v), None, "{v:?}");
        }
    }

    #[test]
    fn route_params_and_uri_parts() {
        assert_eq!(
            route_params("<sip:127.0.0.1:5080;lr;ftag=f;vsf=AA-->"),
            ";lr;ftag=f;vsf=AA--"
        );
        assert_eq!(param_in(";lr;ftag=f;vsf=AA--", "vsf"), Some("AA--"));
        let p = UriParts::parse("sip:bob:pw@[::1]:5062;transport=tcp").unwrap();
        assert_eq!(
            (p.user, p.host, p.port),
            (Some("bob"), "[::1]", Some("5062"))
        );
        let p = UriParts::parse("sips:example.com").unwrap();
        assert_eq!(
            (p.user, p.host, p.port, p.secure),
            (None, "example.com", None, true)
        );
    }
}
