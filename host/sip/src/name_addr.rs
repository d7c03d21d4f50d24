//! name-addr and addr-spec values (From, To, Contact, Route, Record-Route, Refer-To...):
//! optional display name, the URI, and the header parameters after it.

use std::borrow::Cow;

use crate::error::{ErrorKind, ParseError};
use crate::header::{
    Params, eq_ignore_case, find_byte, is_token_byte, is_ws, quoted_len, trim_lws, unquote,
    walk_params,
};
use crate::uri::{Layout, Uri, layout, validate_any_uri};

/// One name-addr (`"Alice" <sip:a@example.com>;tag=1`) or addr-spec
/// (`sip:a@example.com;tag=1`) value, borrowing from the header text.
///
/// In the addr-spec form everything after the first `;` is a header parameter, not a URI
/// parameter (RFC 3261 §20.10), and the URI may not contain `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written: quotes and escapes kept for a quoted-string,
    /// the tokens for an unquoted one; `None` if absent.
    pub display: Option<&'a str>,
    /// The URI, without the angle brackets.
    pub uri: &'a str,
    params: &'a str,
    tag: Option<&'a str>,
}

fn err(detail: String) -> ParseError {
    ParseError::new(ErrorKind::NameAddr, detail)
}

impl<'a> NameAddr<'a> {
    /// Parses one value (not a comma-separated list). Any URI scheme is accepted; URIs with
    /// scheme sip, sips or tel must also be well formed.
    // Inlined so `validate` is a constant in the inlined body: validation runs this for
    // every From, To, Contact and Route value.
    #[inline(always)]
    pub fn parse(s: &'a str) -> Result<NameAddr<'a>, ParseError> {
        Self::parse_with(s, true)
    }

    /// Splits a value already validated by [`crate::Message::parse`] without re-checking
    /// the URI and parameters.
    pub(crate) fn parse_validated(s: &'a str) -> Result<NameAddr<'a>, ParseError> {
        Self::parse_with(s, false)
    }

    // Inlined into its two callers: as a call it costs more than its own checks.
    #[inline(always)]
    fn parse_with(s: &'a str, validate: bool) -> Result<NameAddr<'a>, ParseError> {
        let s = trim_lws(s);
        let b = s.as_bytes();
        if s.is_empty() {
            return Err(err("empty value".into()));
        }
        let (display, open) = if b[0] == b'"' {
            let n = quoted_len(b)
                .ok_or_else(|| err(format!("unterminated quoted display name in {s:?}")))?;
            let after = &s[n..];
            let lead = after
                .bytes()
                .position(|c| !matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
                .unwrap_or(after.len());
            if after.as_bytes().get(lead) != Some(&b'<') {
                return Err(err(format!(
                    "quoted display name not followed by <URI> in {s:?}"
                )));
            }
            (Some(&s[..n]), n + lead)
        } else if let Some(open) = find_byte(s, b'<') {
            let name = trim_lws(&s[..open]);
            if validate && !name.bytes().all(|c| is_token_byte(c) || is_ws(c)) {
                return Err(err(format!(
                    "unquoted display name with non-token characters in {s:?}"
                )));
            }
            (if name.is_empty() { None } else { Some(name) }, open)
        } else {
            // addr-spec: the URI ends at the first ';' (parameters belong to the header) or
            // at whitespace before it.
            let end = find_byte(s, b';').unwrap_or(s.len());
            let uri = trim_lws(&s[..end]);
            let params = &s[end..];
            if validate && uri.bytes().any(|c| c == b'?' || c == b',') {
                return Err(err(format!(
                    "URI with '?' or ',' must be enclosed in <> in {s:?}"
                )));
            }
            return Self::finish(None, uri, params, validate, validate);
        };
        let rest = &s[open + 1..];
        // A sip, sips or tel URI is read up to the '>' in the same pass that checks it.
        if validate && let Ok(Layout { end, .. }) = layout(rest) {
            if rest.as_bytes().get(end) != Some(&b'>') {
                return Err(err(format!("missing '>' after the URI in {s:?}")));
            }
            return Self::finish(display, &rest[..end], &rest[end + 1..], false, true);
        }
        let close = find_byte(rest, b'>').ok_or_else(|| err(format!("missing '>' in {s:?}")))?;
        Self::finish(
            display,
            &rest[..close],
            &rest[close + 1..],
            validate,
            validate,
        )
    }

    /// Checks the URI and the parameters (each when asked) and picks out the tag.
    #[inline(always)]
    fn finish(
        display: Option<&'a str>,
        uri: &'a str,
        params: &'a str,
        check_uri: bool,
        check_params: bool,
    ) -> Result<NameAddr<'a>, ParseError> {
        if check_uri {
            validate_any_uri(uri, ErrorKind::NameAddr)?;
        }
        let mut tag = None;
        if check_params {
            walk_params(params, ErrorKind::NameAddr, |name, value| {
                if tag.is_none() && eq_ignore_case(name.as_bytes(), b"tag") {
                    tag = Some(value);
                }
            })?;
        } else {
            tag = Params::new(params).get("tag");
        }
        Ok(NameAddr {
            display,
            uri,
            params,
            tag: tag.flatten(),
        })
    }

    /// The display name with quotes removed and escapes resolved.
    pub fn display_name(&self) -> Option<Cow<'a, str>> {
        self.display.map(unquote)
    }

    /// The URI parsed (sip, sips, tel; other schemes give an error).
    pub fn parsed_uri(&self) -> Result<Uri<'a>, ParseError> {
        Uri::parse(self.uri)
    }

    /// Header parameters after the URI, in order.
    pub fn params(&self) -> Params<'a> {
        Params::new(self.params)
    }

    /// The first header parameter named `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<Option<&'a str>> {
        self.params().get(name)
    }

    /// The `tag` parameter.
    pub fn tag(&self) -> Option<&'a str> {
        self.tag
    }

    /// The raw parameter text after the URI (starting at `;`, possibly empty).
    pub fn params_str(&self) -> &'a str {
        self.params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_display_with_escapes_and_folded_params() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com>  ;  tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(n.display, Some(r#""J Rosenberg \\\"""#));
        assert_eq!(n.display_name().unwrap(), r#"J Rosenberg \""#);
        assert_eq!(n.uri, "sip:jdrosen@example.com");
        assert_eq!(n.tag(), Some("98asjd8"));
    }

    #[test]
    fn addr_spec_params_belong_to_header() {
        let n = NameAddr::parse("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert_eq!(n.uri, "sip:+19725552222@gw1.example.net");
        assert_eq!(n.param("unknownparam"), Some(None));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display, Some("caller"));
        assert_eq!(n.tag(), Some("323"));
        let n = NameAddr::parse("isbn:2983792873").unwrap();
        assert_eq!(n.uri, "isbn:2983792873");
    }

    #[test]
    fn malformed_values_are_rejected() {
        for bad in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "\"Joe\" <sip:joe@example.org>;;;;",
            "<sip:a@b",
            "",
        ] {
            assert!(NameAddr::parse(bad).is_err(), "{bad}");
        }
    }
}
