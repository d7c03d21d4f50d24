//! The SIP message: parsed once into spans over a shared `Bytes` buffer, read through
//! accessors, edited by recording changed header entries, and serialized by copying every
//! untouched line verbatim.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use crate::error::{ErrorKind, ParseError};
use crate::header::{
    CommaValues, HeaderKind, eq_ignore_case, first_comma, first_semicolon, is_token, is_token_byte,
    is_ws, quoted_len, trim_lws,
};
use crate::method::Method;
use crate::name_addr::NameAddr;
use crate::scan::{HeadDefect, HeadScan};
use crate::uri::{validate_any_uri, whole_layout};
use crate::via::{Via, ViaSpans};

/// Largest message [`Message::parse`] accepts (also the stream framing limit).
pub const MAX_MESSAGE_SIZE: usize = 1 << 20;

/// Text that is either a span of the message buffer or owned (edited or unfolded): then a
/// span of the message's `owned` text, so entries are small and `Copy`, and dropping or
/// cloning a message allocates once for all its edits. Offsets fit in `u32` as messages are at most
/// [`MAX_MESSAGE_SIZE`] bytes.
#[derive(Clone, Copy, Debug)]
enum Text {
    Span(u32, u32),
    Owned(u32, u32),
}

impl Text {
    fn span(start: usize, end: usize) -> Text {
        Text::Span(start as u32, end as u32)
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    kind: HeaderKind,
    name: Text,
    value: Text,
    /// The original line, terminator included, while the entry is unedited.
    raw: Option<(u32, u32)>,
}

impl Entry {
    /// The original line as buffer offsets, while the entry is unedited.
    fn line(&self) -> Option<(usize, usize)> {
        self.raw.map(|(s, e)| (s as usize, e as usize))
    }
}

#[derive(Clone, Debug)]
enum StartLine {
    Request {
        method: Method,
        uri: Text,
        raw: Option<(usize, usize)>,
    },
    Response {
        status: u16,
        reason: Text,
        raw: Option<(usize, usize)>,
    },
}

/// A SIP request or response.
///
/// Parsing indexes the start line and every header line as spans of the buffer; header
/// values are interpreted only when an accessor asks. Edits replace, insert or drop header
/// entries; [`Message::write_to`] copies each untouched line byte for byte and always emits
/// a Content-Length matching the body.
#[derive(Clone)]
pub struct Message {
    buf: Bytes,
    start: StartLine,
    headers: Vec<Entry>,
    /// The text of `Text::Owned`, one string after another: unfolded values and what edits
    /// wrote. Only appended to until the message goes (edits are few), so a span stays valid.
    owned: String,
    body: Bytes,
    /// The whole message as received, when it can be re-sent as is (no edits, a correct
    /// Content-Length present).
    verbatim: Option<(usize, usize)>,
    /// Where validation found the fields read on every message; dropped by any edit.
    located: Option<Located>,
}

/// Byte offsets within a header value.
pub(crate) type Span = (u32, u32);

/// Where `part`, a slice of `value`, sits in it.
pub(crate) fn span_in(value: &str, part: &str) -> Span {
    let start = (part.as_ptr() as usize).saturating_sub(value.as_ptr() as usize);
    (start as u32, (start + part.len()) as u32)
}

/// The text at `span` of `value` (empty if the value changed under it).
pub(crate) fn at_span(value: &str, (s, e): Span) -> &str {
    value.get(s as usize..e as usize).unwrap_or("")
}

/// What validation located: header line indexes and spans within their values.
#[derive(Clone, Debug, Default)]
struct Located {
    via: Option<(usize, ViaSpans)>,
    /// From and To lines, and their tags.
    from: Option<(usize, Option<Span>)>,
    to: Option<(usize, Option<Span>)>,
    call_id: Option<usize>,
    /// The CSeq number, line, and method.
    cseq: Option<(u32, usize, Span)>,
    max_forwards: Option<u32>,
}

/// Where the content of the line from `start` to the LF at `nl` ends: before a CR that
/// precedes the LF.
fn content_end(b: &[u8], start: usize, nl: usize) -> usize {
    if nl > start && b.get(nl - 1) == Some(&b'\r') {
        nl - 1
    } else {
        nl
    }
}

fn trim_span(b: &[u8], mut s: usize, mut e: usize) -> (usize, usize) {
    while s < e && b.get(s).is_some_and(|&c| is_ws(c)) {
        s += 1;
    }
    while e > s && b.get(e - 1).is_some_and(|&c| is_ws(c)) {
        e -= 1;
    }
    (s, e)
}

/// Replaces each line fold (CRLF or LF) by nothing, leaving the whitespace that followed it,
/// so the folded value reads as one line (RFC 3261 §7.3.1: a fold is equivalent to SP).
fn unfold(s: &str) -> String {
    trim_lws(s)
        .chars()
        .filter(|&c| c != '\r' && c != '\n')
        .collect()
}

// Inlined: the common `SIP/2.0` needs one comparison, cheaper than the call.
#[inline(always)]
fn check_version(v: &[u8], at: usize) -> Result<(), ParseError> {
    if v == b"SIP/2.0" {
        return Ok(());
    }
    if v.is_empty() {
        return Err(ParseError::at(
            ErrorKind::StartLine,
            "whitespace after the SIP version",
            at,
        ));
    }
    let Some(num) = v
        .get(..4)
        .filter(|p| p.eq_ignore_ascii_case(b"SIP/"))
        .and_then(|_| v.get(4..))
    else {
        return Err(ParseError::at(ErrorKind::StartLine, "no SIP version", at));
    };
    let mut parts = num.splitn(2, |&c| c == b'.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    let digits = |p: &[u8]| !p.is_empty() && p.iter().all(u8::is_ascii_digit);
    if !digits(major) || !digits(minor) {
        return Err(ParseError::at(
            ErrorKind::StartLine,
            "malformed SIP version",
            at,
        ));
    }
    if major.iter().skip_while(|&&c| c == b'0').eq(b"2".iter()) && minor.iter().all(|&c| c == b'0')
    {
        return Ok(());
    }
    Err(ParseError::at(
        ErrorKind::UnsupportedVersion,
        format!("{:?}", String::from_utf8_lossy(v)),
        at,
    ))
}

/// Parses the start line `text`, found at buffer offset `s`; `next` is where the following
/// line starts. The text comes from the header section, already checked as UTF-8.
fn parse_start_line(text: &str, s: usize, next: usize) -> Result<StartLine, ParseError> {
    let line = text.as_bytes();
    let e = s + line.len();
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let sp = memchr::memchr(b' ', line)
            .ok_or_else(|| ParseError::at(ErrorKind::StartLine, "no status code", s))?;
        check_version(&line[..sp], s)?;
        let rest = &text[sp + 1..];
        let code_end = rest.find(' ').unwrap_or(rest.len());
        let code = &rest[..code_end];
        if code.len() != 3 || !code.bytes().all(|c| c.is_ascii_digit()) {
            return Err(ParseError::at(
                ErrorKind::Status,
                format!("status code {code:?} is not three digits"),
                s + sp + 1,
            ));
        }
        let status: u16 = code.parse().unwrap_or(0);
        if !(100..=699).contains(&status) {
            return Err(ParseError::at(
                ErrorKind::Status,
                format!("status code {status} out of range"),
                s + sp + 1,
            ));
        }
        let reason_start = (s + sp + 1 + code_end + 1).min(e);
        return Ok(StartLine::Response {
            status,
            reason: Text::span(reason_start, e),
            raw: Some((s, next)),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version
    let sp1 = memchr::memchr(b' ', line)
        .ok_or_else(|| ParseError::at(ErrorKind::StartLine, "no Request-URI", s))?;
    let sp2 = memchr::memrchr(b' ', line).unwrap_or(sp1);
    if sp2 == sp1 {
        return Err(ParseError::at(ErrorKind::StartLine, "no SIP version", s));
    }
    let method = &text[..sp1];
    if !is_token(method) {
        return Err(ParseError::at(
            ErrorKind::Method,
            format!("{method:?} is not a token"),
            s,
        ));
    }
    check_version(&line[sp2 + 1..], s + sp2 + 1)?;
    let uri = &text[sp1 + 1..sp2];
    if uri.is_empty() || uri.bytes().any(is_ws) {
        return Err(ParseError::at(
            ErrorKind::RequestUri,
            "extra whitespace in the Request-Line",
            s + sp1 + 1,
        ));
    }
    let uri_at = s + sp1 + 1;
    match whole_layout(uri) {
        Ok(parsed) if parsed.has_headers() => {
            return Err(ParseError::at(
                ErrorKind::RequestUri,
                "headers are not allowed in a Request-URI",
                uri_at,
            ));
        }
        Ok(_) => {}
        // Other schemes are allowed with a looser check; this also words the error.
        Err(_) => {
            validate_any_uri(uri, ErrorKind::RequestUri).map_err(|e| e.with_offset(uri_at))?
        }
    }
    Ok(StartLine::Request {
        method: Method::from_bytes(method.as_bytes()),
        uri: Text::span(s + sp1 + 1, s + sp2),
        raw: Some((s, next)),
    })
}

fn parse_content_length(v: &str) -> Option<usize> {
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// The value of a run of up to nine digits at the start of `v`, and the run's length.
fn leading_number(v: &[u8]) -> (u32, usize) {
    let mut n = 0u32;
    let mut len = 0;
    for &c in v.iter().take(9) {
        if !c.is_ascii_digit() {
            break;
        }
        n = n * 10 + u32::from(c - b'0');
        len += 1;
    }
    (n, len)
}

/// `Max-Forwards: 1*DIGIT` (leading zeros allowed).
fn parse_max_forwards(v: &str) -> Option<u32> {
    let significant = v.trim_start_matches('0');
    let zeros = v.len() - significant.len();
    let (n, len) = leading_number(significant.as_bytes());
    (len == significant.len() && zeros + len > 0).then_some(n)
}

/// `CSeq: 1*DIGIT LWS Method`; the number must be below 2^31 (RFC 3261 §8.1.1.5).
fn parse_cseq(v: &str) -> Option<(u32, &str)> {
    let b = v.as_bytes();
    let (mut n, mut digits) = leading_number(b);
    // A tenth digit still fits below 2^31 only for numbers up to 2,147,483,647.
    if let Some(&c) = b.get(digits).filter(|c| c.is_ascii_digit() && digits == 9) {
        n = n
            .checked_mul(10)?
            .checked_add(u32::from(c - b'0'))
            .filter(|&n| n < (1 << 31))?;
        digits += 1;
    }
    if digits == 0 || !matches!(b.get(digits), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        return None;
    }
    let method = trim_lws(&v[digits..]);
    is_token(method).then_some((n, method))
}

fn text<'a>(buf: &'a Bytes, owned: &'a str, t: &Text) -> &'a str {
    match *t {
        Text::Span(s, e) => {
            let bytes = buf.get(s as usize..e as usize).unwrap_or_default();
            debug_assert!(std::str::from_utf8(bytes).is_ok());
            // SAFETY: spans are only made over text already known to be UTF-8 (a parsed
            // start line or header section, or `&str` written by `Builder`), and start and
            // end next to ASCII delimiters, so they are char boundaries.
            unsafe { std::str::from_utf8_unchecked(bytes) }
        }
        Text::Owned(s, e) => owned.get(s as usize..e as usize).unwrap_or(""),
    }
}

/// Room for the usual edits of a relayed message (Via, Record-Route, Max-Forwards) at the
/// first one, rather than growing through every power of two.
fn make_room(owned: &mut String) {
    if owned.capacity() == 0 {
        owned.reserve(256);
    }
}

/// Appends `s` to a message's owned text; its span there.
fn own_in(owned: &mut String, s: &str) -> Text {
    make_room(owned);
    let start = owned.len();
    owned.push_str(s);
    Text::Owned(start as u32, owned.len() as u32)
}

/// A predicate selecting the entries of header `name` (case-insensitive, compact forms).
fn matcher(name: &str) -> impl Fn(&Entry, &Bytes, &str) -> bool + '_ {
    let kind = HeaderKind::of(name.as_bytes());
    move |e: &Entry, buf: &Bytes, owned: &str| {
        e.kind == kind
            && (kind != HeaderKind::Other
                || eq_ignore_case(text(buf, owned, &e.name).as_bytes(), name.as_bytes()))
    }
}

/// Where the header parameters of one list value begin: after the `>` of a name-addr, else
/// at the start (a Via or addr-spec, whose text before the first `;` is kept as is).
fn params_start(value: &str) -> usize {
    let b = value.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => match quoted_len(&b[i..]) {
                Some(n) => {
                    i += n;
                    continue;
                }
                None => return 0,
            },
            b'<' => return value[i..].find('>').map_or(0, |c| i + c + 1),
            b';' => return 0,
            _ => {}
        }
        i += 1;
    }
    0
}

/// Keeps only token characters of a header name given to an edit.
fn clean_name(name: &str) -> Option<Cow<'_, str>> {
    if !name.is_empty() && name.bytes().all(is_token_byte) {
        return Some(Cow::Borrowed(name));
    }
    let n: String = name
        .chars()
        .filter(|&c| c.is_ascii() && is_token_byte(c as u8))
        .collect();
    (!n.is_empty()).then_some(Cow::Owned(n))
}

/// Replaces CR and LF in an edited value by SP so an edit cannot inject header lines.
fn clean_value(value: &str) -> Cow<'_, str> {
    let v = trim_lws(value);
    if v.bytes().any(|c| matches!(c, b'\r' | b'\n')) {
        v.chars()
            .map(|c| if matches!(c, '\r' | '\n') { ' ' } else { c })
            .collect::<String>()
            .into()
    } else {
        v.into()
    }
}

/// In a single value like `SIP/2.0/UDP h;branch=x;rport`, sets parameter `name` to `value`
/// (`None` for a flag), replacing the first existing one or appending.
fn set_param(s: &str, name: &str, value: Option<&str>) -> String {
    let rendered = match value {
        Some(v) => format!("{name}={v}"),
        None => name.to_owned(),
    };
    let head_end = first_semicolon(s);
    let mut out = String::with_capacity(s.len() + rendered.len() + 1);
    out.push_str(&s[..head_end]);
    let mut rest = &s[head_end..];
    let mut done = false;
    while let Some(after) = rest.strip_prefix(';') {
        let end = first_semicolon(after);
        let piece = &after[..end];
        let pname = trim_lws(piece.split('=').next().unwrap_or(""));
        out.push(';');
        if !done && eq_ignore_case(pname.as_bytes(), name.as_bytes()) {
            out.push_str(&rendered);
            done = true;
        } else {
            out.push_str(piece);
        }
        rest = &after[end..];
    }
    if !done {
        let trimmed = out.trim_end_matches([' ', '\t']).len();
        out.truncate(trimmed);
        out.push(';');
        out.push_str(&rendered);
    }
    out
}

impl Message {
    /// Parses one whole message: a UDP datagram or a message framed by [`crate::frame_stream`].
    ///
    /// Leading CRLFs are skipped. The body is framed by Content-Length: a value larger than
    /// the bytes present is an error, a smaller one drops the extra bytes, and without the
    /// header the body is the rest of the buffer. Besides syntax, the parse checks what a
    /// proxy relies on: Via, From, To, Call-ID and CSeq present (the last four once), CSeq
    /// matching the request method, Max-Forwards at most 255, and that Via, From, To,
    /// Contact, Route and Record-Route values are well formed.
    pub fn parse(buf: Bytes) -> Result<Message, ParseError> {
        let b: &[u8] = &buf;
        if b.len() > MAX_MESSAGE_SIZE {
            return Err(ParseError::new(
                ErrorKind::TooLarge,
                format!("{} bytes", b.len()),
            ));
        }
        let pos = b
            .iter()
            .position(|&c| c != b'\r' && c != b'\n')
            .ok_or_else(|| ParseError::new(ErrorKind::Empty, ""))?;
        let mut scan = HeadScan::new(b, pos);
        let mut lfs = [0usize; 32];
        let (mut have, mut taken) = (0, 0);
        let mut next_lf = || {
            if taken == have {
                have = scan.fill(&mut lfs);
                taken = 0;
                if have == 0 {
                    return None;
                }
            }
            taken += 1;
            lfs.get(taken - 1).copied()
        };
        let nl = next_lf().ok_or_else(|| {
            ParseError::at(ErrorKind::Unterminated, "start line has no line end", pos)
        })?;
        let line_end = content_end(b, pos, nl);
        let mut cur = nl + 1;
        let start_next = cur;
        let mut headers: Vec<Entry> = Vec::with_capacity(16);
        // Indexes of entries continued on folded lines, unfolded once UTF-8 is checked.
        let mut folded: Vec<usize> = Vec::new();
        let body_start = loop {
            let nl = next_lf().ok_or_else(|| {
                ParseError::at(
                    ErrorKind::Unterminated,
                    "no empty line after the headers",
                    cur,
                )
            })?;
            let le = content_end(b, cur, nl);
            let nx = nl + 1;
            if le == cur {
                break nx;
            }
            let first = b.get(cur).copied().unwrap_or(b' ');
            if is_ws(first) {
                let Some(last) = headers.last_mut() else {
                    return Err(ParseError::at(
                        ErrorKind::HeaderLine,
                        "continuation line before the first header",
                        cur,
                    ));
                };
                if let Text::Span(_, e) = &mut last.value {
                    *e = le as u32;
                }
                if let Some((_, e)) = &mut last.raw {
                    *e = nx as u32;
                }
                if folded.last() != Some(&(headers.len() - 1)) {
                    folded.push(headers.len() - 1);
                }
            } else {
                let (kind, name_end, colon) = match HeaderKind::known_at(b, cur) {
                    Some((kind, len)) => (kind, cur + len, cur + len),
                    None => {
                        let mut i = cur;
                        while i < le && b.get(i).is_some_and(|&c| is_token_byte(c)) {
                            i += 1;
                        }
                        let name_end = i;
                        while i < le && b.get(i).is_some_and(|&c| is_ws(c)) {
                            i += 1;
                        }
                        if name_end == cur || b.get(i) != Some(&b':') || i >= le {
                            return Err(ParseError::at(
                                ErrorKind::HeaderLine,
                                "expected `name: value`",
                                cur,
                            ));
                        }
                        let kind = HeaderKind::of_at(b, cur, name_end - cur);
                        (kind, name_end, i)
                    }
                };
                let (vs, ve) = trim_span(b, colon + 1, le);
                headers.push(Entry {
                    kind,
                    name: Text::span(cur, name_end),
                    value: Text::span(vs, ve),
                    raw: Some((cur as u32, nx as u32)),
                });
            }
            cur = nx;
        };
        let head = &b[pos..body_start];
        let head_text = match scan.defect() {
            // SAFETY: every byte is below 0x80, and ASCII is valid UTF-8.
            None => unsafe { std::str::from_utf8_unchecked(head) },
            Some(HeadDefect::NonAscii) => std::str::from_utf8(head).map_err(|u| {
                ParseError::at(
                    ErrorKind::InvalidUtf8,
                    "in the header section",
                    pos + u.valid_up_to(),
                )
            })?,
            Some(HeadDefect::BareCr) => {
                let bare = memchr::memchr_iter(b'\r', head)
                    .find(|&cr| head.get(cr + 1) != Some(&b'\n'))
                    .unwrap_or(0);
                return Err(ParseError::at(ErrorKind::HeaderLine, "bare CR", pos + bare));
            }
        };
        let start = parse_start_line(
            head_text.get(..line_end - pos).unwrap_or_default(),
            pos,
            start_next,
        )?;
        let mut owned = String::new();
        for &i in &folded {
            if let Some(entry) = headers.get_mut(i)
                && let Text::Span(s, e) = entry.value
            {
                let text = std::str::from_utf8(&b[s as usize..e as usize]).unwrap_or_default();
                entry.value = own_in(&mut owned, &unfold(text));
            }
        }
        let mut content_length: Option<usize> = None;
        for entry in headers
            .iter()
            .filter(|e| e.kind == HeaderKind::ContentLength)
        {
            let v = text(&buf, &owned, &entry.value);
            let n = parse_content_length(v).ok_or_else(|| {
                ParseError::new(ErrorKind::ContentLength, format!("{v:?} is not a length"))
                    .with_offset(entry.line().map_or(pos, |(s, _)| s))
            })?;
            if content_length.is_some_and(|c| c != n) {
                return Err(ParseError::new(
                    ErrorKind::ContentLength,
                    "conflicting values",
                ));
            }
            content_length = Some(n);
        }
        let available = b.len() - body_start;
        let body_end = match content_length {
            Some(n) if n > available => {
                return Err(ParseError::new(
                    ErrorKind::ContentLength,
                    format!("Content-Length {n} but only {available} body bytes"),
                ));
            }
            Some(n) => body_start + n,
            None => b.len(),
        };
        let parts = Parts {
            buf: &buf,
            owned: &owned,
            start: &start,
            headers: &headers,
        };
        let located = parts.validate(head_text, pos)?;
        // Assembled last, so the message is written once, where the caller keeps it.
        Ok(Message {
            body: buf.slice(body_start..body_end),
            buf,
            start,
            headers,
            owned,
            verbatim: content_length.map(|_| (pos, body_end)),
            located: Some(located),
        })
    }

    /// The value of header line `i`.
    fn value_of(&self, i: usize) -> &str {
        self.headers.get(i).map_or("", |e| self.text(&e.value))
    }

    fn text(&self, t: &Text) -> &str {
        text(&self.buf, &self.owned, t)
    }

    fn first_of_kind(&self, kind: HeaderKind) -> Option<&str> {
        self.headers
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| self.text(&e.value))
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method (requests only).
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI as on the wire, after edits (requests only).
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(self.text(uri)),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code (responses only).
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase, possibly empty (responses only).
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(self.text(reason)),
            StartLine::Request { .. } => None,
        }
    }

    /// The value of the first header line named `name` (case-insensitive; compact forms
    /// match their long form), trimmed and with line folds removed.
    pub fn header(&self, name: &str) -> Option<&str> {
        let is = matcher(name);
        self.headers
            .iter()
            .find(|e| is(e, &self.buf, &self.owned))
            .map(|e| self.text(&e.value))
    }

    /// The values of every header line named `name`, in order.
    pub fn headers<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        let kind = HeaderKind::of(name.as_bytes());
        self.headers
            .iter()
            .filter(move |e| {
                e.kind == kind
                    && (kind != HeaderKind::Other
                        || eq_ignore_case(self.text(&e.name).as_bytes(), name.as_bytes()))
            })
            .map(|e| self.text(&e.value))
    }

    /// The comma-separated values of every line named `name`, in order, split outside quoted
    /// strings and `<...>`; empty elements are skipped. For list headers (Via, Route,
    /// Record-Route, Contact, Supported...); not for Date or the auth headers, whose values
    /// contain commas.
    pub fn header_values<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.headers(name).flat_map(CommaValues::new)
    }

    /// Every header line as (name as written, value), in order, after edits.
    pub fn all_headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .map(|e| (self.text(&e.name), self.text(&e.value)))
    }

    /// The body (after edits).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as a shared buffer.
    pub fn body_bytes(&self) -> Bytes {
        self.body.clone()
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&str> {
        match &self.located {
            Some(l) => l.call_id.map(|i| self.value_of(i)),
            None => self.first_of_kind(HeaderKind::CallId),
        }
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, Method)> {
        if let Some(l) = &self.located {
            let (n, i, method) = l.cseq?;
            // Validation made a request's CSeq method equal to its own.
            let method = match &self.start {
                StartLine::Request { method, .. } => method.clone(),
                StartLine::Response { .. } => Method::from(at_span(self.value_of(i), method)),
            };
            return Some((n, method));
        }
        let (n, m) = parse_cseq(self.first_of_kind(HeaderKind::CSeq)?)?;
        Some((n, Method::from(m)))
    }

    /// The From header's tag.
    pub fn from_tag(&self) -> Option<&str> {
        match &self.located {
            Some(l) => l
                .from
                .and_then(|(i, tag)| Some(at_span(self.value_of(i), tag?))),
            None => self.from()?.tag(),
        }
    }

    /// The To header's tag.
    pub fn to_tag(&self) -> Option<&str> {
        match &self.located {
            Some(l) => {
                l.to.and_then(|(i, tag)| Some(at_span(self.value_of(i), tag?)))
            }
            None => self.to()?.tag(),
        }
    }

    /// The From header parsed.
    pub fn from(&self) -> Option<NameAddr<'_>> {
        NameAddr::parse_validated(self.first_of_kind(HeaderKind::From)?).ok()
    }

    /// The To header parsed.
    pub fn to(&self) -> Option<NameAddr<'_>> {
        NameAddr::parse_validated(self.first_of_kind(HeaderKind::To)?).ok()
    }

    /// Max-Forwards, if present and numeric.
    pub fn max_forwards(&self) -> Option<u32> {
        match &self.located {
            Some(l) => l.max_forwards,
            None => parse_max_forwards(self.first_of_kind(HeaderKind::MaxForwards)?),
        }
    }

    /// The topmost Via value.
    pub fn top_via(&self) -> Option<Via<'_>> {
        if let Some(l) = &self.located {
            let (i, at) = l.via.as_ref()?;
            return Some(Via::relocate(self.value_of(*i), at));
        }
        let first = self.headers.iter().find(|e| e.kind == HeaderKind::Via)?;
        Via::parse_validated(CommaValues::new(self.text(&first.value)).next()?).ok()
    }

    // ---- edits ----

    fn edited(&mut self) {
        self.verbatim = None;
        self.located = None;
    }

    /// Keeps `s` with the message as the text of an edit.
    fn own(&mut self, s: &str) -> Text {
        own_in(&mut self.owned, s)
    }

    fn new_entry(&mut self, name: &str, value: &str) -> Option<Entry> {
        let name = clean_name(name)?;
        Some(Entry {
            kind: HeaderKind::of(name.as_bytes()),
            name: self.own(&name),
            value: self.own(&clean_value(value)),
            raw: None,
        })
    }

    /// Replaces the Request-URI (requests only; ignored on responses). Whitespace and control
    /// characters are dropped so the Request-Line stays well formed.
    pub fn set_request_uri(&mut self, new_uri: &str) {
        if !self.is_request() {
            return;
        }
        let new_uri: String = new_uri
            .chars()
            .filter(|c| !c.is_whitespace() && !c.is_control())
            .collect();
        let new_uri = self.own(&new_uri);
        if let StartLine::Request { uri, raw, .. } = &mut self.start {
            *uri = new_uri;
            *raw = None;
            self.verbatim = None;
        }
    }

    /// Inserts a header line before the first one (where Via and Record-Route go).
    /// Non-token characters are dropped from `name` (nothing happens if none remain); CR and
    /// LF in `value` become SP.
    pub fn prepend_header(&mut self, name: &str, value: &str) {
        if let Some(e) = self.new_entry(name, value) {
            self.headers.insert(0, e);
            self.edited();
        }
    }

    /// As [`Message::prepend_header`], with the value formatted straight into the message's
    /// own text (a Via or Record-Route the proxy writes costs no string of its own).
    pub fn prepend_header_fmt(&mut self, name: &str, value: impl fmt::Display) {
        use fmt::Write as _;
        let start = self.owned.len();
        make_room(&mut self.owned);
        let _ = write!(self.owned, "{value}");
        let written = &self.owned[start..];
        let clean = !written.bytes().any(|c| matches!(c, b'\r' | b'\n'))
            && trim_lws(written).len() == written.len();
        let Some(name) = clean_name(name).filter(|_| clean) else {
            // Rare: cleaned the slow way (or refused for a bad name), as `prepend_header`.
            let value = self.owned.split_off(start);
            self.prepend_header(name, &value);
            return;
        };
        let value = Text::Owned(start as u32, self.owned.len() as u32);
        let entry = Entry {
            kind: HeaderKind::of(name.as_bytes()),
            name: self.own(&name),
            value,
            raw: None,
        };
        self.headers.insert(0, entry);
        self.edited();
    }

    /// Appends a header line after the last one. Names and values are cleaned as in
    /// [`Message::prepend_header`].
    pub fn append_header(&mut self, name: &str, value: &str) {
        if let Some(e) = self.new_entry(name, value) {
            self.headers.push(e);
            self.edited();
        }
    }

    /// Replaces every line named `name` by one line at the position of the first (appends if
    /// there is none).
    pub fn set_header(&mut self, name: &str, value: &str) {
        let Some(entry) = self.new_entry(name, value) else {
            return;
        };
        let is = matcher(name);
        let (buf, owned) = (&self.buf, &self.owned);
        let mut replacement = Some(entry);
        let mut kept = Vec::with_capacity(self.headers.len() + 1);
        for e in self.headers.drain(..) {
            if !is(&e, buf, owned) {
                kept.push(e);
            } else if let Some(r) = replacement.take() {
                kept.push(r);
            }
        }
        kept.extend(replacement);
        self.headers = kept;
        self.edited();
    }

    /// Removes every line named `name`; returns how many were removed.
    pub fn remove_header(&mut self, name: &str) -> usize {
        let is = matcher(name);
        let (buf, owned) = (&self.buf, &self.owned);
        let before = self.headers.len();
        self.headers.retain(|e| !is(e, buf, owned));
        let removed = before - self.headers.len();
        if removed > 0 {
            self.edited();
        }
        removed
    }

    /// Pops the first comma-separated value of the first line named `name`: `Via: a, b`
    /// becomes `Via: b`; a line left empty is removed. Returns the popped value.
    pub fn remove_first_value(&mut self, name: &str) -> Option<String> {
        let is = matcher(name);
        let i = self
            .headers
            .iter()
            .position(|e| is(e, &self.buf, &self.owned))?;
        let value = self.text(&self.headers[i].value);
        let mut rest = value;
        let popped = loop {
            let end = first_comma(rest);
            let piece = trim_lws(&rest[..end]);
            rest = rest.get(end + 1..).unwrap_or("");
            if !piece.is_empty() {
                break piece.to_owned();
            }
            if rest.is_empty() {
                break String::new();
            }
        };
        let rest = trim_lws(rest);
        if CommaValues::new(rest).next().is_none() {
            self.headers.remove(i);
        } else {
            // The rest is a tail of the same text: narrow the span instead of copying it.
            let (from, to) = span_in(value, rest);
            let e = &mut self.headers[i];
            e.value = match e.value {
                Text::Span(s, _) => Text::Span(s + from, s + to),
                Text::Owned(s, _) => Text::Owned(s + from, s + to),
            };
            e.raw = None;
        }
        self.edited();
        (!popped.is_empty()).then_some(popped)
    }

    /// Sets a parameter on the first value of the first line named `header` (e.g. a
    /// Record-Route parameter), replacing an existing one of that name; `None` as value
    /// writes a flag. For a name-addr the parameter goes after the `>`. Whitespace, `;`, `,`
    /// and NUL are dropped from the value. Returns false if there is no such header.
    pub fn set_first_value_param(
        &mut self,
        header: &str,
        param: &str,
        value: Option<&str>,
    ) -> bool {
        let Some(param) = clean_name(param) else {
            return false;
        };
        let unsafe_char = |c: char| c.is_whitespace() || matches!(c, ';' | ',' | '\0');
        let value: Option<Cow<'_, str>> = value.map(|v| {
            if v.contains(unsafe_char) {
                v.replace(unsafe_char, "").into()
            } else {
                v.into()
            }
        });
        let is = matcher(header);
        let Some(i) = self
            .headers
            .iter()
            .position(|e| is(e, &self.buf, &self.owned))
        else {
            return false;
        };
        let whole = self.text(&self.headers[i].value);
        let comma = first_comma(whole);
        let first = &whole[..comma];
        let split = params_start(first);
        let new_value = format!(
            "{}{}{}",
            &first[..split],
            set_param(&first[split..], &param, value.as_deref()),
            &whole[comma..]
        );
        let new_value = self.own(&new_value);
        let e = &mut self.headers[i];
        e.value = new_value;
        e.raw = None;
        self.edited();
        true
    }

    /// Sets (`Some`) or adds as a flag (`None`) a parameter of the top Via value, e.g.
    /// `received=192.0.2.1` or `rport=5060`.
    pub fn set_top_via_param(&mut self, name: &str, value: Option<&str>) {
        self.set_first_value_param("Via", name, value);
    }

    /// Replaces the body. `content_type` sets Content-Type; with `None`, an empty body also
    /// drops Content-Type. Content-Length is fixed here and again on serialization.
    pub fn set_body(&mut self, body: Bytes, content_type: Option<&str>) {
        match content_type {
            Some(ct) => self.set_header("Content-Type", ct),
            None if body.is_empty() => {
                self.remove_header("Content-Type");
            }
            None => {}
        }
        let len = body.len().to_string();
        self.body = body;
        if self.header("Content-Length") != Some(len.as_str()) {
            self.set_header("Content-Length", &len);
        }
        self.edited();
    }

    // ---- serialization ----

    /// The message bytes to send. An unedited message with a correct Content-Length is
    /// returned without copying.
    pub fn to_bytes(&self) -> Bytes {
        if let Some((s, e)) = self.verbatim {
            return self.buf.slice(s..e);
        }
        let mut out = Vec::with_capacity(self.buf.len() + 128);
        self.write_to(&mut out);
        Bytes::from(out)
    }

    /// Appends the message bytes to `out`: untouched lines verbatim, edited ones rendered as
    /// `Name: value`, one Content-Length equal to the body length, then the body.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        if let Some((s, e)) = self.verbatim {
            out.extend_from_slice(&self.buf[s..e]);
            return;
        }
        let raw = |out: &mut Vec<u8>, (s, e): (usize, usize)| {
            out.extend_from_slice(self.buf.get(s..e).unwrap_or_default())
        };
        match &self.start {
            StartLine::Request { raw: Some(r), .. } | StartLine::Response { raw: Some(r), .. } => {
                raw(out, *r)
            }
            StartLine::Request {
                method,
                uri,
                raw: None,
            } => {
                out.extend_from_slice(method.as_str().as_bytes());
                out.push(b' ');
                out.extend_from_slice(self.text(uri).as_bytes());
                out.extend_from_slice(b" SIP/2.0\r\n");
            }
            StartLine::Response {
                status,
                reason,
                raw: None,
            } => {
                out.extend_from_slice(format!("SIP/2.0 {status} ").as_bytes());
                out.extend_from_slice(self.text(reason).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        }
        let body_len = self.body.len();
        let mut wrote_length = false;
        for e in &self.headers {
            if e.kind == HeaderKind::ContentLength {
                if wrote_length {
                    continue;
                }
                wrote_length = true;
                match e.line() {
                    Some(r) if parse_content_length(self.text(&e.value)) == Some(body_len) => {
                        raw(out, r)
                    }
                    _ => {
                        out.extend_from_slice(self.text(&e.name).as_bytes());
                        out.extend_from_slice(format!(": {body_len}\r\n").as_bytes());
                    }
                }
                continue;
            }
            match e.line() {
                Some(r) => raw(out, r),
                None => {
                    out.extend_from_slice(self.text(&e.name).as_bytes());
                    out.extend_from_slice(b": ");
                    out.extend_from_slice(self.text(&e.value).as_bytes());
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        if !wrote_length {
            out.extend_from_slice(format!("Content-Length: {body_len}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }

    // ---- construction ----

    /// A response to this request per RFC 3261 §8.2.6: all Via lines, From, To (with
    /// `to_tag` added if given and To has no tag), Call-ID and CSeq copied, and
    /// Content-Length: 0. A status outside 100..=699 is sent as 500; CR and LF in `reason`
    /// become SP.
    pub fn response(&self, status: u16, reason: &str, to_tag: Option<&str>) -> Message {
        let status = if (100..=699).contains(&status) {
            status
        } else {
            500
        };
        // Room for the copied lines at once instead of growing through every power of two.
        let mut b = Builder {
            buf: Vec::with_capacity(512),
            headers: Vec::with_capacity(8),
        };
        b.buf.extend_from_slice(b"SIP/2.0 ");
        b.buf
            .extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
        b.buf.push(b' ');
        let rs = b.buf.len();
        b.buf.extend_from_slice(clean_value(reason).as_bytes());
        let re = b.buf.len();
        b.buf.extend_from_slice(b"\r\n");
        let start = StartLine::Response {
            status,
            reason: Text::span(rs, re),
            raw: Some((0, b.buf.len())),
        };
        for e in self.headers.iter().filter(|e| e.kind == HeaderKind::Via) {
            b.header(HeaderKind::Via, self.text(&e.value));
        }
        if let Some(from) = self.first_of_kind(HeaderKind::From) {
            b.header(HeaderKind::From, from);
        }
        if let Some(to) = self.first_of_kind(HeaderKind::To) {
            match to_tag {
                Some(tag) if self.to_tag().is_none() => {
                    let tag: String = tag
                        .chars()
                        .filter(|c| c.is_ascii() && is_token_byte(*c as u8))
                        .collect();
                    b.header(HeaderKind::To, &format!("{to};tag={tag}"));
                }
                _ => b.header(HeaderKind::To, to),
            }
        }
        for kind in [HeaderKind::CallId, HeaderKind::CSeq] {
            if let Some(v) = self.first_of_kind(kind) {
                b.header(kind, v);
            }
        }
        b.header(HeaderKind::ContentLength, "0");
        b.finish(start)
    }

    /// A new request with only a Request-Line; add headers with the edit methods. Whitespace
    /// and control characters are dropped from `uri`.
    pub fn request(method: Method, uri: &str) -> Message {
        Self::request_with_headers(method, uri, std::iter::empty())
    }

    /// A request with these header lines, in order, laid out in one buffer: what
    /// [`Message::request`] and an [`Message::append_header`] per line give, without an
    /// allocation per line (a filter's REGISTER is built this way on every refresh). Names
    /// and values are cleaned as `append_header` cleans them; a name with nothing left is
    /// skipped.
    pub fn request_with_headers<'a>(
        method: Method,
        uri: &str,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Message {
        let mut b = Builder::default();
        let uri: String = uri
            .chars()
            .filter(|c| !c.is_whitespace() && !c.is_control())
            .collect();
        b.buf.extend_from_slice(method.as_str().as_bytes());
        b.buf.push(b' ');
        let us = b.buf.len();
        b.buf.extend_from_slice(uri.as_bytes());
        let ue = b.buf.len();
        b.buf.extend_from_slice(b" SIP/2.0\r\n");
        let start = StartLine::Request {
            method,
            uri: Text::span(us, ue),
            raw: Some((0, b.buf.len())),
        };
        for (name, value) in headers {
            b.named(name, value);
        }
        b.finish(start)
    }
}

/// What validation reads of a message being parsed, before it is assembled.
struct Parts<'a> {
    buf: &'a Bytes,
    owned: &'a str,
    start: &'a StartLine,
    headers: &'a [Entry],
}

impl Parts<'_> {
    /// Checks the values a proxy relies on; errors carry the offset of the offending line.
    /// `head` is the header section (starting at buffer offset `head_at`), already checked
    /// as UTF-8, so span values are sliced from it without re-checking each one. Returns
    /// where the fields read on every message sit.
    fn validate(&self, head: &str, head_at: usize) -> Result<Located, ParseError> {
        let mut found = Located::default();
        let (mut vias, mut froms, mut tos, mut call_ids, mut cseqs, mut max_fwds) =
            (0, 0, 0, 0, 0, 0);
        for (i, entry) in self.headers.iter().enumerate() {
            // Only these are checked here (Content-Length was, by the parse): the rest need no
            // value sliced.
            if !matches!(
                entry.kind,
                HeaderKind::Via
                    | HeaderKind::From
                    | HeaderKind::To
                    | HeaderKind::CallId
                    | HeaderKind::CSeq
                    | HeaderKind::MaxForwards
                    | HeaderKind::Contact
                    | HeaderKind::Route
                    | HeaderKind::RecordRoute
            ) {
                continue;
            }
            let at = entry.line().map_or(0, |(s, _)| s);
            let value = match entry.value {
                Text::Span(s, e) => (s as usize)
                    .checked_sub(head_at)
                    .zip((e as usize).checked_sub(head_at))
                    .and_then(|(s, e)| head.get(s..e))
                    .unwrap_or(""),
                Text::Owned(..) => self.text(&entry.value),
            };
            let values = self
                .validate_entry(i, entry, value, &mut found)
                .map_err(|e| e.with_offset(at))?;
            match entry.kind {
                HeaderKind::Via => vias += values,
                HeaderKind::From => froms += 1,
                HeaderKind::To => tos += 1,
                HeaderKind::CallId => call_ids += 1,
                HeaderKind::CSeq => cseqs += 1,
                HeaderKind::MaxForwards => max_fwds += 1,
                _ => {}
            }
        }
        for (count, name) in [
            (froms, "From"),
            (tos, "To"),
            (call_ids, "Call-ID"),
            (cseqs, "CSeq"),
        ] {
            match count {
                0 => return Err(ParseError::new(ErrorKind::MissingHeader, name)),
                1 => {}
                _ => return Err(ParseError::new(ErrorKind::DuplicateHeader, name)),
            }
        }
        if vias == 0 {
            return Err(ParseError::new(ErrorKind::MissingHeader, "Via"));
        }
        if max_fwds > 1 {
            return Err(ParseError::new(ErrorKind::DuplicateHeader, "Max-Forwards"));
        }
        Ok(found)
    }

    /// Checks header line `i`, noting in `found` what it locates; returns how many Via
    /// values it holds (for counting).
    // Inlined into its one caller: as a call its arguments and result cost more than many
    // of the checks.
    #[inline(always)]
    fn validate_entry(
        &self,
        i: usize,
        entry: &Entry,
        value: &str,
        found: &mut Located,
    ) -> Result<usize, ParseError> {
        let bad = |kind: ErrorKind, what: &str| {
            ParseError::new(
                kind,
                format!("{}: {value:?} {what}", self.text(&entry.name)),
            )
        };
        match entry.kind {
            HeaderKind::Via => {
                let mut n = 0;
                for v in CommaValues::new(value) {
                    let via = Via::parse(v)?;
                    if found.via.is_none() {
                        found.via = Some((i, via.locate(value)));
                    }
                    n += 1;
                }
                return Ok(n);
            }
            HeaderKind::From | HeaderKind::To => {
                let tag = NameAddr::parse(value)?.tag().map(|t| span_in(value, t));
                let slot = if entry.kind == HeaderKind::From {
                    &mut found.from
                } else {
                    &mut found.to
                };
                slot.get_or_insert((i, tag));
            }
            HeaderKind::CallId => {
                // Folded without an early exit, so it compiles to vector compares.
                let spaced = value
                    .bytes()
                    .fold(false, |bad, c| bad | (c <= b' ') | (c == 0x7f));
                if value.is_empty() || spaced {
                    return Err(bad(ErrorKind::HeaderValue, "is not a Call-ID"));
                }
                found.call_id.get_or_insert(i);
            }
            HeaderKind::CSeq => {
                let (n, method) = parse_cseq(value)
                    .ok_or_else(|| bad(ErrorKind::HeaderValue, "is not `number method`"))?;
                if let StartLine::Request { method: m, .. } = &self.start
                    && m.as_str() != method
                {
                    return Err(ParseError::new(
                        ErrorKind::CSeqMismatch,
                        format!("request method {m} but CSeq method {method}"),
                    ));
                }
                found.cseq.get_or_insert((n, i, span_in(value, method)));
            }
            HeaderKind::MaxForwards => match parse_max_forwards(value) {
                Some(n) if n <= 255 => {
                    found.max_forwards.get_or_insert(n);
                }
                _ => return Err(bad(ErrorKind::HeaderValue, "is not in 0..=255")),
            },
            HeaderKind::Contact if value != "*" => {
                for v in CommaValues::new(value) {
                    NameAddr::parse(v)?;
                }
            }
            HeaderKind::Route | HeaderKind::RecordRoute => {
                for v in CommaValues::new(value) {
                    NameAddr::parse(v)?;
                }
            }
            _ => {}
        }
        Ok(0)
    }

    fn text(&self, t: &Text) -> &str {
        text(self.buf, self.owned, t)
    }
}

/// Writes a fresh message and records the spans as it goes.
#[derive(Default)]
struct Builder {
    buf: Vec<u8>,
    headers: Vec<Entry>,
}

impl Builder {
    fn header(&mut self, kind: HeaderKind, value: &str) {
        self.line(kind, kind.long_name(), &clean_value(value));
    }

    /// A line under the name given (a compact or unknown name stays as written).
    fn named(&mut self, name: &str, value: &str) {
        // Borrowed when already clean, which a name and value almost always are.
        let Some(name) = clean_name(name) else {
            return;
        };
        let trimmed = trim_lws(value);
        let value = if trimmed.bytes().any(|c| matches!(c, b'\r' | b'\n')) {
            Cow::Owned(clean_value(trimmed).into_owned())
        } else {
            Cow::Borrowed(trimmed)
        };
        self.line(HeaderKind::of(name.as_bytes()), &name, &value);
    }

    /// Appends `name: value` (both already clean) and its entry.
    fn line(&mut self, kind: HeaderKind, name: &str, value: &str) {
        let s = self.buf.len();
        self.buf.extend_from_slice(name.as_bytes());
        let ne = self.buf.len();
        self.buf.extend_from_slice(b": ");
        let vs = self.buf.len();
        self.buf.extend_from_slice(value.as_bytes());
        let ve = self.buf.len();
        self.buf.extend_from_slice(b"\r\n");
        self.headers.push(Entry {
            kind,
            name: Text::span(s, ne),
            value: Text::span(vs, ve),
            raw: Some((s as u32, self.buf.len() as u32)),
        });
    }

    fn finish(mut self, start: StartLine) -> Message {
        self.buf.extend_from_slice(b"\r\n");
        let len = self.buf.len();
        let has_length = self
            .headers
            .iter()
            .any(|e| e.kind == HeaderKind::ContentLength);
        Message {
            buf: Bytes::from(self.buf),
            start,
            headers: self.headers,
            owned: String::new(),
            body: Bytes::new(),
            verbatim: has_length.then_some((0, len)),
            located: None,
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        match &self.start {
            StartLine::Request { method, uri, .. } => {
                d.field("method", method).field("uri", &self.text(uri))
            }
            StartLine::Response { status, reason, .. } => d
                .field("status", status)
                .field("reason", &self.text(reason)),
        };
        d.field("headers", &self.all_headers().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .finish()
    }
}
