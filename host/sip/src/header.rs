//! Header names (case-insensitive, compact forms) and the lexical pieces shared by header
//! grammars: tokens, quoted strings, comma-separated values and `;name=value` parameters.

use crate::error::{ErrorKind, ParseError};

/// Headers the codec knows by name, so lookups compare a tag instead of strings and compact
/// forms (RFC 3261 §7.3.3 and later extensions) resolve to the same header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HeaderKind {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    ContentType,
    ContentEncoding,
    Contact,
    Route,
    RecordRoute,
    Subject,
    Supported,
    Event,
    AllowEvents,
    ReferTo,
    ReferredBy,
    SessionExpires,
    Identity,
    AcceptContact,
    RejectContact,
    RequestDisposition,
    Other,
}

/// (kind, long name, compact letter)
const KNOWN: &[(HeaderKind, &str, Option<u8>)] = &[
    (HeaderKind::Via, "Via", Some(b'v')),
    (HeaderKind::From, "From", Some(b'f')),
    (HeaderKind::To, "To", Some(b't')),
    (HeaderKind::CallId, "Call-ID", Some(b'i')),
    (HeaderKind::CSeq, "CSeq", None),
    (HeaderKind::MaxForwards, "Max-Forwards", None),
    (HeaderKind::ContentLength, "Content-Length", Some(b'l')),
    (HeaderKind::ContentType, "Content-Type", Some(b'c')),
    (HeaderKind::ContentEncoding, "Content-Encoding", Some(b'e')),
    (HeaderKind::Contact, "Contact", Some(b'm')),
    (HeaderKind::Route, "Route", None),
    (HeaderKind::RecordRoute, "Record-Route", None),
    (HeaderKind::Subject, "Subject", Some(b's')),
    (HeaderKind::Supported, "Supported", Some(b'k')),
    (HeaderKind::Event, "Event", Some(b'o')),
    (HeaderKind::AllowEvents, "Allow-Events", Some(b'u')),
    (HeaderKind::ReferTo, "Refer-To", Some(b'r')),
    (HeaderKind::ReferredBy, "Referred-By", Some(b'b')),
    (HeaderKind::SessionExpires, "Session-Expires", Some(b'x')),
    (HeaderKind::Identity, "Identity", Some(b'y')),
    (HeaderKind::AcceptContact, "Accept-Contact", Some(b'a')),
    (HeaderKind::RejectContact, "Reject-Contact", Some(b'j')),
    (
        HeaderKind::RequestDisposition,
        "Request-Disposition",
        Some(b'd'),
    ),
];

/// Names up to this long are compared as three folded 64-bit words.
const WORDS_LEN: usize = 24;

/// A header name's bytes with bit 5 set on each (lowercasing letters; the token characters
/// it maps onto letters or `-` are not token characters), packed little-endian and
/// zero-padded, so comparing names is comparing three words.
type Folded = [u64; 3];

const fn fold_const(name: &str) -> Folded {
    let b = name.as_bytes();
    let mut w = [0u64; 3];
    let mut i = 0;
    while i < b.len() {
        w[i / 8] |= ((b[i] | 0x20) as u64) << (8 * (i % 8));
        i += 1;
    }
    w
}

/// The three little-endian words of `chunk`.
fn words(chunk: &[u8; WORDS_LEN]) -> [u64; 3] {
    let word = |k: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&chunk[8 * k..8 * k + 8]);
        u64::from_le_bytes(w)
    };
    [word(0), word(1), word(2)]
}

/// Word `k` of the folded name of `len` bytes whose words are `w`.
fn fold_word(w: &[u64; 3], len: usize, k: usize) -> u64 {
    let keep = len.saturating_sub(8 * k).min(8);
    let mask = if keep == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * keep)) - 1
    };
    (w[k] | 0x2020_2020_2020_2020) & mask
}

/// Bit 7 set in the bytes of `w` equal to `byte`: exact up to the first such byte, and
/// non-zero exactly when there is one (later bytes may be flagged spuriously).
fn bytes_equal(w: u64, byte: u8) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = w ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & (ONES << 7)
}

/// A hash of a folded name's first word and its length that puts every known long name in
/// its own one of 32 buckets (the multiplier was searched for that), so resolving a name
/// is one lookup and one comparison.
const fn bucket(first_word: u64, len: usize) -> usize {
    ((first_word ^ len as u64).wrapping_mul(0x3842_38c6_dbe2_f27d) >> 59) as usize
}

/// The known kind whose long name is the name of `len` (2..=24) bytes whose words are `w`,
/// else `Other`.
fn resolve(w: &[u64; 3], len: usize) -> HeaderKind {
    let first = fold_word(w, len, 0);
    // Words after the first are folded only for a name still in the running.
    let k = BUCKETS[bucket(first, len)];
    let known = &FOLDED[k as usize];
    let same = known[0] == first
        && (len <= 8 || known[1] == fold_word(w, len, 1))
        && (len <= 16 || known[2] == fold_word(w, len, 2));
    if same { k } else { HeaderKind::Other }
}

/// The kind whose long name hashes to each bucket (`Other` where none does).
static BUCKETS: [HeaderKind; 32] = {
    let mut t = [HeaderKind::Other; 32];
    let mut i = 0;
    while i < KNOWN.len() {
        let name = KNOWN[i].1;
        let slot = bucket(fold_const(name)[0], name.len());
        // A collision would make this table silently wrong: fail the build instead.
        assert!(matches!(t[slot], HeaderKind::Other));
        t[slot] = KNOWN[i].0;
        i += 1;
    }
    t
};

/// The folded long name of each kind, indexed by `kind as usize`.
static FOLDED: [Folded; HeaderKind::Other as usize + 1] = {
    let mut t = [[0u64; 3]; HeaderKind::Other as usize + 1];
    let mut i = 0;
    while i < KNOWN.len() {
        t[KNOWN[i].0 as usize] = fold_const(KNOWN[i].1);
        i += 1;
    }
    t
};

impl HeaderKind {
    /// Resolves a header name (long or compact, any case).
    pub(crate) fn of(name: &[u8]) -> HeaderKind {
        // Folding is exact only over token characters.
        if name.len() > WORDS_LEN || !name.iter().all(|&c| is_token_byte(c)) {
            return HeaderKind::Other;
        }
        let mut padded = [0u8; WORDS_LEN];
        padded[..name.len()].copy_from_slice(name);
        HeaderKind::of_at(&padded, 0, name.len())
    }

    /// Resolves the name of `len` token bytes at `start` of `b`; reads past the name
    /// when `b` has the bytes, which saves copying it.
    pub(crate) fn of_at(b: &[u8], start: usize, len: usize) -> HeaderKind {
        use HeaderKind::*;
        if len > WORDS_LEN {
            return Other;
        }
        let Some(chunk) = b
            .get(start..start + WORDS_LEN)
            .and_then(|c| <&[u8; WORDS_LEN]>::try_from(c).ok())
        else {
            return HeaderKind::of(b.get(start..start + len).unwrap_or_default());
        };
        let w = words(chunk);
        let first = fold_word(&w, len, 0);
        if len == 1 {
            let letter = (first & 0xff) as u8;
            return KNOWN
                .iter()
                .find(|(_, _, c)| c.map(|c| c | 0x20) == Some(letter))
                .map_or(Other, |(k, _, _)| *k);
        }
        resolve(&w, len)
    }

    /// Resolves a header line at `start` whose name is a known long name followed directly
    /// by `:`; returns the kind and the name's length. `None` sends the line to the general
    /// path (compact, unknown or unusual names, `name :`, or near the buffer's end), so the
    /// common line costs a few word operations instead of a loop over its name.
    // Inlined: as a call it costs about as much as the loop it replaces.
    #[inline(always)]
    pub(crate) fn known_at(b: &[u8], start: usize) -> Option<(HeaderKind, usize)> {
        let chunk = b
            .get(start..start + WORDS_LEN)
            .and_then(|c| <&[u8; WORDS_LEN]>::try_from(c).ok())?;
        let w = words(chunk);
        // The first `:` or CR: each mask is exact up to its first hit, so their union is
        // exact up to the first of either.
        let stops = |x: u64| bytes_equal(x, b':') | bytes_equal(x, b'\r');
        let (k, hits) = match (stops(w[0]), stops(w[1]), stops(w[2])) {
            (0, 0, 0) => return None,
            (0, 0, h) => (2, h),
            (0, h, _) => (1, h),
            (h, _, _) => (0, h),
        };
        let len = 8 * k + hits.trailing_zeros() as usize / 8;
        if len < 2 || chunk.get(len) != Some(&b':') {
            return None;
        }
        // Folding maps only letters onto letters, and `-` and CR onto `-`: a known name
        // without a CR is all token bytes.
        let kind = resolve(&w, len);
        (kind != HeaderKind::Other).then_some((kind, len))
    }

    /// The canonical long name (for headers this codec writes itself).
    pub(crate) fn long_name(self) -> &'static str {
        use HeaderKind::*;
        match self {
            Via => "Via",
            From => "From",
            To => "To",
            CallId => "Call-ID",
            CSeq => "CSeq",
            MaxForwards => "Max-Forwards",
            ContentLength => "Content-Length",
            ContentType => "Content-Type",
            ContentEncoding => "Content-Encoding",
            Contact => "Contact",
            Route => "Route",
            RecordRoute => "Record-Route",
            Subject => "Subject",
            Supported => "Supported",
            Event => "Event",
            AllowEvents => "Allow-Events",
            ReferTo => "Refer-To",
            ReferredBy => "Referred-By",
            SessionExpires => "Session-Expires",
            Identity => "Identity",
            AcceptContact => "Accept-Contact",
            RejectContact => "Reject-Contact",
            RequestDisposition => "Request-Disposition",
            Other => "",
        }
    }
}

const TOKEN: u8 = 1;
/// Host name characters (alphanumerics, `-`, `.`, `_`).
pub(crate) const HOST: u8 = 2;
/// Bytes that matter when splitting a list on commas: `,` `"` `<` `>`.
const COMMA_SPECIAL: u8 = 4;
/// Linear whitespace as left in a header value: SP, HT, and CR/LF of a fold.
const LWS: u8 = 8;
/// Unquoted parameter value characters: token characters, and `[` `]` `:` of IPv6 hosts.
const PARAM_VALUE: u8 = 16;
/// Bytes that never appear unescaped in a URI: whitespace, controls, `<`, `>`, `"`.
pub(crate) const URI_FORBIDDEN: u8 = 32;
/// The delimiters a URI's layout hangs on: `@ : ; ?`.
pub(crate) const URI_DELIMITER: u8 = 64;
/// URI scheme characters after the first: alphanumerics, `+`, `-`, `.`.
pub(crate) const SCHEME: u8 = 128;

/// Character classes by byte, so hot loops test one table entry per byte.
pub(crate) static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            )
        {
            t[i] |= TOKEN;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            t[i] |= HOST;
        }
        if matches!(b, b',' | b'"' | b'<' | b'>') {
            t[i] |= COMMA_SPECIAL;
        }
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            t[i] |= LWS;
        }
        if t[i] & TOKEN != 0 || matches!(b, b'[' | b']' | b':') {
            t[i] |= PARAM_VALUE;
        }
        if is_uri_forbidden(b) {
            t[i] |= URI_FORBIDDEN;
        }
        if matches!(b, b'@' | b':' | b';' | b'?') {
            t[i] |= URI_DELIMITER;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.') {
            t[i] |= SCHEME;
        }
        i += 1;
    }
    t
};

/// Bytes that never appear unescaped in a URI: whitespace, controls, `<`, `>`, `"`.
pub(crate) const fn is_uri_forbidden(b: u8) -> bool {
    b <= b' ' || b == 0x7f || b == b'<' || b == b'>' || b == b'"'
}

#[cfg(test)]
impl HeaderKind {
    fn all_known() -> impl Iterator<Item = (HeaderKind, &'static str, Option<u8>)> {
        KNOWN.iter().copied()
    }
}

/// Whether two header names denote the same header (case-insensitive, compact forms equal).
pub fn same_header_name(a: &str, b: &str) -> bool {
    let ka = HeaderKind::of(a.as_bytes());
    if ka != HeaderKind::Other {
        return ka == HeaderKind::of(b.as_bytes());
    }
    a.eq_ignore_ascii_case(b)
}

/// ASCII case-insensitive equality. Folds every byte without an early exit so the loop
/// compiles branch-free (vectorized) on the short names and parameters compared here.
pub(crate) fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |diff, (x, y)| {
            diff | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
        }) == 0
}

/// RFC 3261 `token` characters.
pub(crate) fn is_token_byte(b: u8) -> bool {
    CLASS[b as usize] & TOKEN != 0
}

pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_byte)
}

pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Trims SP / HT (and CR / LF left by unfolding) on both ends.
pub(crate) fn trim_lws(s: &str) -> &str {
    let b = s.as_bytes();
    let lws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let start = b.iter().position(|c| !lws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !lws(c)).map_or(start, |e| e + 1);
    // Both ends sit next to ASCII bytes, so they are char boundaries.
    s.get(start..end).unwrap_or("")
}

/// Byte offset of the first `byte` (an ASCII character) in `s`.
pub(crate) fn find_byte(s: &str, byte: u8) -> Option<usize> {
    // Values are short; a plain scan beats memchr's setup cost here.
    s.bytes().position(|c| c == byte)
}

/// Given `s` starting with `"`, returns the byte length of the quoted string including both
/// quotes, honouring `\` escapes; `None` if it is not terminated.
pub(crate) fn quoted_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Splits a header value on top-level commas (outside quoted strings and `<...>`), yielding
/// trimmed, non-empty pieces. Iterates over a single line's value.
#[derive(Clone)]
pub(crate) struct CommaValues<'a> {
    rest: &'a str,
}

impl<'a> CommaValues<'a> {
    pub(crate) fn new(value: &'a str) -> Self {
        CommaValues { rest: value }
    }
}

/// Byte offset of the first top-level comma in `s`, or `s.len()`.
// Inlined, like `CommaValues::next`, `known_at` and `NameAddr::finish`: each runs a few
// times per message on short input, and LLVM would otherwise keep the call (measured with
// bench/codec-instructions.sh).
#[inline(always)]
pub(crate) fn first_comma(s: &str) -> usize {
    let b = s.as_bytes();
    // Most values hold a single item: one vectorized search settles those.
    if memchr::memchr(b',', b).is_none() {
        return b.len();
    }
    let mut i = 0;
    let mut in_angle = false;
    while i < b.len() {
        // One table test skips the ordinary bytes; values are too short for memchr's
        // per-call setup to pay off.
        if CLASS[b[i] as usize] & COMMA_SPECIAL == 0 {
            i += 1;
            continue;
        }
        match b[i] {
            b'"' => match quoted_len(&b[i..]) {
                Some(n) => {
                    i += n;
                    continue;
                }
                None => return b.len(),
            },
            b'<' => in_angle = true,
            b'>' => in_angle = false,
            b',' if !in_angle => return i,
            _ => {}
        }
        i += 1;
    }
    b.len()
}

impl<'a> Iterator for CommaValues<'a> {
    type Item = &'a str;
    #[inline(always)]
    fn next(&mut self) -> Option<&'a str> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let end = first_comma(self.rest);
            let piece = trim_lws(&self.rest[..end]);
            self.rest = self.rest.get(end + 1..).unwrap_or("");
            if !piece.is_empty() {
                return Some(piece);
            }
        }
    }
}

/// Iterates `;name[=value]` parameters (leading `;` optional), yielding trimmed name and
/// value as written (quoted values keep their quotes). Splits on `;` outside quotes.
#[derive(Clone, Debug)]
pub struct Params<'a> {
    rest: &'a str,
}

impl<'a> Params<'a> {
    /// Parameters in `s`, e.g. `;tag=1;lr` or `transport=tcp;lr`.
    pub fn new(s: &'a str) -> Self {
        Params { rest: s }
    }

    /// The value of the first parameter named `name` (case-insensitive):
    /// `None` if absent, `Some(None)` for a flag like `;lr`.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.clone()
            .find(|(n, _)| eq_ignore_case(n.as_bytes(), name.as_bytes()))
            .map(|(_, v)| v)
    }
}

/// Byte offset of the first `;` outside quoted strings, or `s.len()`.
pub(crate) fn first_semicolon(s: &str) -> usize {
    let b = s.as_bytes();
    // Parameters are a few bytes long: a plain scan beats memchr's per-call setup.
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b';' => return i,
            b'"' => match quoted_len(&b[i..]) {
                Some(n) => i += n,
                None => return b.len(),
            },
            _ => i += 1,
        }
    }
    b.len()
}

impl<'a> Iterator for Params<'a> {
    type Item = (&'a str, Option<&'a str>);
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let s = trim_lws(self.rest);
            let s = s.strip_prefix(';').unwrap_or(s);
            if s.is_empty() {
                self.rest = "";
                return None;
            }
            let end = first_semicolon(s);
            let piece = &s[..end];
            self.rest = &s[end..];
            let (name, value) = match find_byte(piece, b'=') {
                Some(eq) => (trim_lws(&piece[..eq]), Some(trim_lws(&piece[eq + 1..]))),
                None => (trim_lws(piece), None),
            };
            if !name.is_empty() {
                return Some((name, value));
            }
        }
    }
}

/// Checks that `s` is empty or a sequence of `;name[=value]` with LWS allowed around the
/// separators (names are tokens; values tokens, quoted strings or bracketed IPv6 hosts), and
/// hands each name and value (quotes kept) to `each`, so callers pick out the parameters
/// they keep (branch, tag) in the same pass.
pub(crate) fn walk_params<'a>(
    s: &'a str,
    kind: ErrorKind,
    mut each: impl FnMut(&'a str, Option<&'a str>),
) -> Result<(), ParseError> {
    let b = s.as_bytes();
    let n = b.len();
    let mut i = 0;
    let lws = |c: u8| CLASS[c as usize] & LWS != 0;
    loop {
        while i < n && lws(b[i]) {
            i += 1;
        }
        if i == n {
            return Ok(());
        }
        if b[i] != b';' {
            return Err(params_err(kind, "expected ';' before parameter", s));
        }
        i += 1;
        while i < n && lws(b[i]) {
            i += 1;
        }
        let start = i;
        while i < n && is_token_byte(b[i]) {
            i += 1;
        }
        if i == start {
            return Err(params_err(kind, "empty parameter name", s));
        }
        let name_end = i;
        while i < n && lws(b[i]) {
            i += 1;
        }
        if i == n || b[i] != b'=' {
            each(&s[start..name_end], None);
            continue;
        }
        i += 1;
        while i < n && lws(b[i]) {
            i += 1;
        }
        let vstart = i;
        if i < n && b[i] == b'"' {
            match quoted_len(&b[i..]) {
                Some(q) => i += q,
                None => return Err(params_err(kind, "unterminated quoted parameter", s)),
            }
        } else {
            while i < n && CLASS[b[i] as usize] & PARAM_VALUE != 0 {
                i += 1;
            }
            if i == vstart {
                return Err(params_err(kind, "empty parameter value", s));
            }
        }
        each(&s[start..name_end], Some(&s[vstart..i]));
    }
}

#[cold]
fn params_err(kind: ErrorKind, what: &str, s: &str) -> ParseError {
    ParseError::new(kind, format!("{what} in {s:?}"))
}

/// Checks parameters without keeping any.
#[cfg(test)]
fn validate_params(s: &str, kind: ErrorKind) -> Result<(), ParseError> {
    walk_params(s, kind, |_, _| {})
}

/// Removes the quotes and `\` escapes of a quoted string; other strings are returned as is.
pub(crate) fn unquote(s: &str) -> std::borrow::Cow<'_, str> {
    let Some(inner) = s.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
        return std::borrow::Cow::Borrowed(s);
    };
    if !inner.contains('\\') {
        return std::borrow::Cow::Borrowed(inner);
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_and_long_names_resolve_alike() {
        assert_eq!(HeaderKind::of(b"v"), HeaderKind::Via);
        assert_eq!(HeaderKind::of(b"VIA"), HeaderKind::Via);
        assert_eq!(HeaderKind::of(b"call-id"), HeaderKind::CallId);
        assert_eq!(HeaderKind::of(b"I"), HeaderKind::CallId);
        assert_eq!(HeaderKind::of(b"X-Custom"), HeaderKind::Other);
        for (kind, long, compact) in HeaderKind::all_known() {
            assert_eq!(kind.long_name(), long);
            assert_eq!(HeaderKind::of(long.as_bytes()), kind, "{long}");
            assert_eq!(
                HeaderKind::of(long.to_ascii_uppercase().as_bytes()),
                kind,
                "{long}"
            );
            if let Some(c) = compact {
                assert_eq!(HeaderKind::of(&[c.to_ascii_uppercase()]), kind, "{long}");
            }
        }
        assert!(same_header_name("l", "content-length"));
        assert!(same_header_name("X-A", "x-a"));
        assert!(!same_header_name("X-A", "X-B"));
    }

    #[test]
    fn commas_inside_quotes_and_angles_do_not_split() {
        let v: Vec<_> =
            CommaValues::new(r#""Doe, J" <sip:a@b;x=1,2>, <sip:c@d> ,, "q\",\"" <sip:e>"#)
                .collect();
        assert_eq!(
            v,
            [
                r#""Doe, J" <sip:a@b;x=1,2>"#,
                "<sip:c@d>",
                r#""q\",\"" <sip:e>"#
            ]
        );
    }

    #[test]
    fn params_tolerate_lws_and_quotes() {
        let p = Params::new(" ;  tag = 98asjd8 ; lr; x=\"a;b\"");
        let all: Vec<_> = p.clone().collect();
        assert_eq!(
            all,
            [
                ("tag", Some("98asjd8")),
                ("lr", None),
                ("x", Some("\"a;b\""))
            ]
        );
        assert_eq!(p.get("TAG"), Some(Some("98asjd8")));
        assert_eq!(p.get("lr"), Some(None));
        assert_eq!(p.get("nope"), None);
        assert!(validate_params(";;", ErrorKind::HeaderValue).is_err());
        assert!(validate_params(";a=", ErrorKind::HeaderValue).is_err());
        assert!(validate_params(" ; a = b ;c;d=\"x\";maddr=[::1]", ErrorKind::HeaderValue).is_ok());
    }

    #[test]
    fn unquote_handles_escapes() {
        assert_eq!(unquote(r#""J Rosenberg \\\"""#), r#"J Rosenberg \""#);
        assert_eq!(unquote("plain"), "plain");
    }
}
