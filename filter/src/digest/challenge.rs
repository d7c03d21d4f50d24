//! Parser for `WWW-Authenticate` / `Proxy-Authenticate` header values (RFC 7235 §4.1
//! grammar, RFC 7616/8760 Digest parameters). Never panics; malformed input is a typed error.

use thiserror::Error;

use super::Algorithm;

/// The `algorithm` parameter as the server sent it: one this filter computes, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeAlgorithm {
    Supported(Algorithm),
    /// The token as received (e.g. `SHA-1`, `AKAv1-MD5`); answering it is impossible.
    Unsupported(String),
}

/// The `qop` options a challenge offers. Unknown options (RFC 7616 allows extensions)
/// are kept by name so an error can say what was offered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QopOptions {
    pub auth: bool,
    pub auth_int: bool,
    pub other: Vec<String>,
}

/// One Digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    /// `MD5` when the parameter is absent (RFC 7616 §3.3).
    pub algorithm: ChallengeAlgorithm,
    /// `None`: no `qop` parameter, the RFC 2069 compatible answer is due.
    pub qop: Option<QopOptions>,
    pub opaque: Option<String>,
    pub stale: bool,
    /// The protection space URIs (`domain`), space separated in the header.
    pub domain: Vec<String>,
    /// RFC 7616 §3.4.4: the server accepts (and may require) a hashed username.
    pub userhash: bool,
}

/// Why a header value is not a valid list of challenges. `at` is a byte offset in the value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChallengeError {
    #[error("no challenge in the header value")]
    Empty,
    #[error("expected an auth scheme token at byte {at}")]
    ExpectedScheme { at: usize },
    #[error("expected a parameter name at byte {at}")]
    ExpectedParamName { at: usize },
    #[error("expected '=' after parameter {name:?} at byte {at}")]
    ExpectedEquals { name: String, at: usize },
    #[error("expected a value for parameter {name:?} at byte {at}")]
    ExpectedValue { name: String, at: usize },
    #[error("control character in a quoted string at byte {at}")]
    ControlCharacter { at: usize },
    #[error("quoted string opened at byte {at} is not closed")]
    UnterminatedQuote { at: usize },
    #[error("expected ',' between parameters at byte {at}")]
    ExpectedComma { at: usize },
    #[error("parameter {name:?} appears twice in one Digest challenge")]
    DuplicateParam { name: String },
    #[error("Digest challenge without the mandatory {name:?} parameter")]
    MissingParam { name: &'static str },
}

/// Parses every challenge in one header value and returns the Digest ones in order.
/// Other schemes (Basic, Bearer, a token68 scheme) are skipped, since a header value may
/// list several schemes, but must still be well formed.
pub fn parse_challenges(value: &str) -> Result<Vec<Challenge>, ChallengeError> {
    let mut lexer = Lexer {
        s: value.as_bytes(),
        pos: 0,
    };
    let mut challenges = Vec::new();
    let mut saw_any = false;
    loop {
        lexer.skip_ws_and_commas();
        if lexer.at_end() {
            break;
        }
        let scheme_at = lexer.pos;
        let scheme = lexer
            .token()
            .ok_or(ChallengeError::ExpectedScheme { at: scheme_at })?;
        saw_any = true;
        let params = lexer.auth_params()?;
        if scheme.eq_ignore_ascii_case("digest") {
            challenges.push(digest_from_params(params)?);
        }
    }
    if saw_any {
        Ok(challenges)
    } else {
        Err(ChallengeError::Empty)
    }
}

/// Parses several header lines (every `WWW-Authenticate` or every `Proxy-Authenticate`
/// of one reply). Lines that fail are reported beside the challenges that parsed, so a
/// caller can answer the good ones and log the bad ones.
pub fn parse_header_lines<'a>(
    lines: impl IntoIterator<Item = &'a str>,
) -> (Vec<Challenge>, Vec<ChallengeError>) {
    let mut challenges = Vec::new();
    let mut errors = Vec::new();
    for line in lines {
        match parse_challenges(line) {
            Ok(mut parsed) => challenges.append(&mut parsed),
            Err(e) => errors.push(e),
        }
    }
    (challenges, errors)
}

fn digest_from_params(params: Vec<(String, String)>) -> Result<Challenge, ChallengeError> {
    /// The parameters read, by their place in `KNOWN`.
    const KNOWN: [&str; 8] = [
        "realm",
        "nonce",
        "algorithm",
        "qop",
        "opaque",
        "stale",
        "domain",
        "userhash",
    ];
    let mut values: [Option<String>; 8] = Default::default();
    for (name, value) in params {
        // charset=UTF-8 and extension parameters change nothing in the answer.
        let Some(at) = KNOWN.iter().position(|k| name.eq_ignore_ascii_case(k)) else {
            continue;
        };
        if values[at].is_some() {
            return Err(ChallengeError::DuplicateParam { name });
        }
        values[at] = Some(value);
    }
    let [
        realm,
        nonce,
        algorithm,
        qop,
        opaque,
        stale,
        domain,
        userhash,
    ] = values;
    let realm = realm.ok_or(ChallengeError::MissingParam { name: "realm" })?;
    let nonce = nonce.ok_or(ChallengeError::MissingParam { name: "nonce" })?;
    let algorithm = match algorithm {
        None => ChallengeAlgorithm::Supported(Algorithm::Md5),
        Some(token) => match Algorithm::from_token(&token) {
            Some(a) => ChallengeAlgorithm::Supported(a),
            None => ChallengeAlgorithm::Unsupported(token),
        },
    };
    let qop = qop.map(|list| {
        let mut options = QopOptions::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item.eq_ignore_ascii_case("auth") {
                options.auth = true;
            } else if item.eq_ignore_ascii_case("auth-int") {
                options.auth_int = true;
            } else {
                options.other.push(item.to_string());
            }
        }
        options
    });
    let is_true = |v: Option<String>| v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    Ok(Challenge {
        realm,
        nonce,
        algorithm,
        qop,
        opaque,
        stale: is_true(stale),
        domain: domain
            .map(|d| d.split_ascii_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        userhash: is_true(userhash),
    })
}

struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
}

/// RFC 7230 tchar.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Control characters a quoted-string may not hold (HTAB is allowed).
pub(crate) fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// RFC 7235 token68 characters, before the trailing '=' padding.
fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

impl<'a> Lexer<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n' | b',')) {
            self.pos += 1;
        }
    }

    fn text(&self, from: usize, to: usize) -> String {
        String::from_utf8_lossy(&self.s[from..to]).into_owned()
    }

    fn token(&mut self) -> Option<String> {
        let start = self.pos;
        self.skip_token().then(|| self.text(start, self.pos))
    }

    /// Moves past a token; false (not moved) when none is here.
    fn skip_token(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// A quoted-string starting at the opening quote; quoted-pairs are unescaped.
    /// Control characters other than HTAB are refused (RFC 7230 qdtext), so nothing
    /// taken from a challenge can break the header line it is echoed in.
    fn quoted(&mut self) -> Result<String, ChallengeError> {
        let open = self.pos;
        self.pos += 1;
        // Room up to the next quote: the whole value unless it holds an escaped one (the
        // value is kept, so not the rest of the header).
        let room = self.s[self.pos..].iter().position(|&b| b == b'"');
        let mut out = Vec::with_capacity(room.unwrap_or(0));
        loop {
            match self.peek() {
                None => return Err(ChallengeError::UnterminatedQuote { at: open }),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(String::from_utf8(out)
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()));
                }
                Some(b'\\') => {
                    let Some(&escaped) = self.s.get(self.pos + 1) else {
                        return Err(ChallengeError::UnterminatedQuote { at: open });
                    };
                    if is_ctl(escaped) {
                        return Err(ChallengeError::ControlCharacter { at: self.pos + 1 });
                    }
                    out.push(escaped);
                    self.pos += 2;
                }
                Some(b) if is_ctl(b) => {
                    return Err(ChallengeError::ControlCharacter { at: self.pos });
                }
                Some(b) => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    /// After a comma: whether the input from here is `name =` (a parameter) rather than
    /// the next challenge's scheme, which is never followed by '='. Does not move.
    fn param_follows(&self) -> bool {
        let mut probe = Lexer {
            s: self.s,
            pos: self.pos,
        };
        if !probe.skip_token() {
            return false;
        }
        probe.skip_ws();
        probe.peek() == Some(b'=')
    }

    /// A token68 (RFC 7235) when the input from here is one: characters, '=' padding,
    /// then the end or a comma. Moves past it only when it is.
    fn token68(&mut self) -> bool {
        let start = self.pos;
        let mut end = start;
        while self.s.get(end).copied().is_some_and(is_token68_char) {
            end += 1;
        }
        if end == start {
            return false;
        }
        while self.s.get(end) == Some(&b'=') {
            end += 1;
        }
        let mut after = end;
        while matches!(self.s.get(after), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            after += 1;
        }
        if after == self.s.len() || self.s[after] == b',' {
            self.pos = end;
            true
        } else {
            false
        }
    }

    /// The parameters after a scheme, up to the next scheme or the end.
    fn auth_params(&mut self) -> Result<Vec<(String, String)>, ChallengeError> {
        let mut params = Vec::new();
        self.skip_ws();
        if self.at_end() || self.peek() == Some(b',') {
            return Ok(params);
        }
        // Only a token68 ends in '=' padding followed by the end or a comma;
        // `name=value` has a value after its '='.
        if self.token68() {
            return Ok(params);
        }
        loop {
            let name_at = self.pos;
            let name = self
                .token()
                .ok_or(ChallengeError::ExpectedParamName { at: name_at })?;
            self.skip_ws();
            if self.peek() != Some(b'=') {
                return Err(ChallengeError::ExpectedEquals { name, at: self.pos });
            }
            self.pos += 1;
            self.skip_ws();
            let value = match self.peek() {
                Some(b'"') => self.quoted()?,
                _ => match self.token() {
                    Some(t) => t,
                    None => return Err(ChallengeError::ExpectedValue { name, at: self.pos }),
                },
            };
            params.push((name, value));
            self.skip_ws();
            match self.peek() {
                None => return Ok(params),
                Some(b',') => {
                    self.skip_ws_and_commas();
                    if self.at_end() || !self.param_follows() {
                        return Ok(params);
                    }
                }
                Some(_) => return Err(ChallengeError::ExpectedComma { at: self.pos }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(value: &str) -> Challenge {
        let mut all = parse_challenges(value).expect("parses");
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    #[test]
    fn kamailio_proxy_challenge() {
        let c = one(r#"Digest realm="trunk.test", nonce="ZmVh1mVoAbc+Q2ZuYWJjZGVm", qop="auth""#);
        assert_eq!(c.realm, "trunk.test");
        assert_eq!(c.nonce, "ZmVh1mVoAbc+Q2ZuYWJjZGVm");
        assert_eq!(c.algorithm, ChallengeAlgorithm::Supported(Algorithm::Md5));
        let qop = c.qop.unwrap();
        assert!(qop.auth && !qop.auth_int);
        assert!(!c.stale && c.opaque.is_none() && !c.userhash);
    }

    #[test]
    fn rfc7616_example_with_every_field() {
        let c = one(concat!(
            "Digest\r\n realm=\"http-auth@example.org\",\r\n qop=\"auth, auth-int\",\r\n",
            " algorithm=SHA-256,\r\n nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n",
            " opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        ));
        assert_eq!(c.realm, "http-auth@example.org");
        assert_eq!(
            c.algorithm,
            ChallengeAlgorithm::Supported(Algorithm::Sha256)
        );
        let qop = c.qop.unwrap();
        assert!(qop.auth && qop.auth_int && qop.other.is_empty());
        assert_eq!(
            c.opaque.as_deref(),
            Some("FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS")
        );
    }

    #[test]
    fn names_and_values_are_case_insensitive_and_tokens_unquoted() {
        let c = one(
            "dIgEsT REALM=r, Nonce=n1, ALGORITHM=sha-512-256-SESS, Stale=TRUE, UserHash=true, qop=auth-int",
        );
        assert_eq!((c.realm.as_str(), c.nonce.as_str()), ("r", "n1"));
        assert_eq!(
            c.algorithm,
            ChallengeAlgorithm::Supported(Algorithm::Sha512_256Sess)
        );
        assert!(c.stale && c.userhash);
        assert!(c.qop.unwrap().auth_int);
    }

    #[test]
    fn quoted_pairs_are_unescaped() {
        let c = one(r#"Digest realm="a \"quoted\" realm, with comma", nonce="n\\x""#);
        assert_eq!(c.realm, r#"a "quoted" realm, with comma"#);
        assert_eq!(c.nonce, r"n\x");
    }

    #[test]
    fn several_challenges_in_one_value_and_other_schemes_skipped() {
        let all = parse_challenges(concat!(
            r#"Digest realm="a", nonce="1", algorithm=SHA-256, "#,
            r#"Basic realm="b", Negotiate YIIBzAYGKwYBBQUCoIIBwDCCAbygDTAL==, "#,
            r#"Digest realm="a", nonce="2", algorithm=MD5, domain="sip:a.test sip:b.test""#
        ))
        .unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].nonce, "1");
        assert_eq!(all[1].nonce, "2");
        assert_eq!(all[1].domain, vec!["sip:a.test", "sip:b.test"]);
    }

    #[test]
    fn several_header_lines_keep_good_ones_and_report_bad_ones() {
        let (challenges, errors) = parse_header_lines([
            r#"Digest realm="a", nonce="1""#,
            r#"Digest realm="b", nonce="2"#,
            r#"Digest realm="c", nonce="3", algorithm=AKAv1-MD5"#,
        ]);
        assert_eq!(challenges.len(), 2);
        assert_eq!(
            challenges[1].algorithm,
            ChallengeAlgorithm::Unsupported("AKAv1-MD5".into())
        );
        assert_eq!(errors, vec![ChallengeError::UnterminatedQuote { at: 24 }]);
    }

    #[test]
    fn unknown_qop_options_are_kept_by_name() {
        let qop = one(r#"Digest realm="r", nonce="n", qop="auth-conf, x-new""#)
            .qop
            .unwrap();
        assert!(!qop.auth && !qop.auth_int);
        assert_eq!(qop.other, vec!["auth-conf", "x-new"]);
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        let cases: &[(&str, ChallengeError)] = &[
            ("", ChallengeError::Empty),
            (" , ,", ChallengeError::Empty),
            ("=x", ChallengeError::ExpectedScheme { at: 0 }),
            (
                r#"Digest realm="r" nonce="n""#,
                ChallengeError::ExpectedComma { at: 17 },
            ),
            (
                r#"Digest realm="r", nonce="#,
                ChallengeError::ExpectedValue {
                    name: "nonce".into(),
                    at: 24,
                },
            ),
            (
                r#"Digest realm nonce"#,
                ChallengeError::ExpectedEquals {
                    name: "realm".into(),
                    at: 13,
                },
            ),
            (
                r#"Digest realm"#,
                ChallengeError::MissingParam { name: "realm" },
            ),
            (
                r#"Digest realm="r\"#,
                ChallengeError::UnterminatedQuote { at: 13 },
            ),
            (
                r#"Digest nonce="n""#,
                ChallengeError::MissingParam { name: "realm" },
            ),
            (
                "Digest realm=\"a\r\nVia: x\", nonce=\"n\"",
                ChallengeError::ControlCharacter { at: 15 },
            ),
            (
                "Digest realm=\"a\\\0\", nonce=\"n\"",
                ChallengeError::ControlCharacter { at: 16 },
            ),
            (
                r#"Digest realm="r""#,
                ChallengeError::MissingParam { name: "nonce" },
            ),
            (
                r#"Digest realm="r", nonce="1", Nonce="2""#,
                ChallengeError::DuplicateParam {
                    name: "Nonce".into(),
                },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_challenges(input).as_ref(),
                Err(expected),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic sweep beside the cargo-fuzz target: every prefix of a
        // tricky value and every single-byte corruption of it.
        let base =
            r#"Digest realm="a\"b", nonce=n, qop="auth,auth-int", Basic x==, Digest realm=r"#;
        for end in 0..=base.len() {
            if let Some(prefix) = base.get(..end) {
                let _ = parse_challenges(prefix);
            }
        }
        for i in 0..base.len() {
            for b in [b'"', b'\\', b',', b'=', b' ', 0xff] {
                let mut bytes = base.as_bytes().to_vec();
                bytes[i] = b;
                let _ = parse_challenges(&String::from_utf8_lossy(&bytes));
            }
        }
    }
}
