//! Parse errors: what is wrong and where, and which status code a server answers with.

use std::borrow::Cow;
use std::fmt;

/// The class of a parse failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No bytes, or only CRLFs.
    Empty,
    /// The Request-Line or Status-Line is malformed.
    StartLine,
    /// The SIP version is not SIP/2.0 (answered with 505).
    UnsupportedVersion,
    /// The method is not a token.
    Method,
    /// The Request-URI is malformed or not allowed there.
    RequestUri,
    /// The status code is not three digits in 100..=699.
    Status,
    /// A header line has no name, a non-token name or no colon.
    HeaderLine,
    /// The header section does not end with an empty line.
    Unterminated,
    /// The start line or header section is not UTF-8.
    InvalidUtf8,
    /// A mandatory header (Via, From, To, Call-ID, CSeq) is missing.
    MissingHeader,
    /// A header that must occur once occurs several times.
    DuplicateHeader,
    /// A header value does not follow its grammar.
    HeaderValue,
    /// Content-Length is malformed, conflicting, or larger than the bytes received.
    ContentLength,
    /// The CSeq method differs from the request method.
    CSeqMismatch,
    /// A URI is malformed.
    Uri,
    /// The URI scheme is not sip, sips or tel (a proxy answers 416 when routing on it).
    UnsupportedScheme,
    /// A name-addr / addr-spec is malformed.
    NameAddr,
    /// A Via value is malformed.
    Via,
    /// The message is larger than the codec accepts.
    TooLarge,
}

impl ErrorKind {
    /// Short description used by `Display`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Empty => "empty message",
            ErrorKind::StartLine => "malformed start line",
            ErrorKind::UnsupportedVersion => "unsupported SIP version",
            ErrorKind::Method => "malformed method",
            ErrorKind::RequestUri => "malformed Request-URI",
            ErrorKind::Status => "malformed status code",
            ErrorKind::HeaderLine => "malformed header line",
            ErrorKind::Unterminated => "header section not terminated",
            ErrorKind::InvalidUtf8 => "invalid UTF-8",
            ErrorKind::MissingHeader => "missing mandatory header",
            ErrorKind::DuplicateHeader => "header occurs more than once",
            ErrorKind::HeaderValue => "malformed header value",
            ErrorKind::ContentLength => "bad Content-Length",
            ErrorKind::CSeqMismatch => "CSeq method does not match the request method",
            ErrorKind::Uri => "malformed URI",
            ErrorKind::UnsupportedScheme => "unsupported URI scheme",
            ErrorKind::NameAddr => "malformed name-addr",
            ErrorKind::Via => "malformed Via",
            ErrorKind::TooLarge => "message too large",
        }
    }

    /// The status code a server answers a request failing this way with:
    /// 505 for an unsupported version, else 400.
    pub fn status_code(self) -> u16 {
        match self {
            ErrorKind::UnsupportedVersion => 505,
            _ => 400,
        }
    }
}

/// Why a message, URI or header value could not be parsed.
///
/// `Display` gives the kind, a detail and, for messages, the byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    kind: ErrorKind,
    detail: Cow<'static, str>,
    offset: Option<usize>,
}

impl ParseError {
    pub(crate) fn new(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> Self {
        ParseError {
            kind,
            detail: detail.into(),
            offset: None,
        }
    }

    pub(crate) fn at(kind: ErrorKind, detail: impl Into<Cow<'static, str>>, offset: usize) -> Self {
        ParseError {
            kind,
            detail: detail.into(),
            offset: Some(offset),
        }
    }

    pub(crate) fn with_offset(mut self, offset: usize) -> Self {
        if self.offset.is_none() {
            self.offset = Some(offset);
        }
        self
    }

    /// The class of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// What exactly is wrong (e.g. the header name involved).
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// Byte offset into the message where the problem was found, if known.
    pub fn offset(&self) -> Option<usize> {
        self.offset
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        if let Some(offset) = self.offset {
            write!(f, " (at byte {offset})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseError {}
