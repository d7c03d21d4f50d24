//! Stream framing for SIP over TCP/TLS (RFC 3261 §18.3): where one message ends in a byte
//! stream, from its headers and mandatory Content-Length.

use crate::error::{ErrorKind, ParseError};
use crate::header::{HeaderKind, is_token_byte, is_ws, trim_lws};
use crate::message::MAX_MESSAGE_SIZE;

/// The outcome of [`frame_stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// The first `n` bytes are one frame: either a whole message (headers and body), or —
    /// when those bytes are only CR and LF — keep-alive CRLFs (RFC 5626 §3.5.1) that the
    /// caller consumes without parsing (answering a double CRLF ping with CRLF if it wants).
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
    /// The stream cannot be framed (no or bad Content-Length, oversize); the connection
    /// should be closed.
    Invalid(ParseError),
}

/// Finds the length of the first frame in `buf`. Content-Length is mandatory on streams.
/// Messages larger than [`MAX_MESSAGE_SIZE`] are invalid.
pub fn frame_stream(buf: &[u8]) -> Framing {
    let crlf = buf
        .iter()
        .take_while(|&&c| c == b'\r' || c == b'\n')
        .count();
    if crlf > 0 {
        return Framing::Complete(crlf);
    }
    let mut pos = 0;
    let mut content_length: Option<usize> = None;
    let mut first_line = true;
    let head_end = loop {
        let Some(rel) = memchr::memchr(b'\n', buf.get(pos..).unwrap_or_default()) else {
            if buf.len() > MAX_MESSAGE_SIZE {
                return Framing::Invalid(ParseError::new(ErrorKind::TooLarge, "header section"));
            }
            return Framing::Incomplete;
        };
        let nl = pos + rel;
        let line = buf.get(pos..nl).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break nl + 1;
        }
        if !first_line && !line.first().is_some_and(|&c| is_ws(c)) {
            let name_end = line
                .iter()
                .position(|&c| !is_token_byte(c))
                .unwrap_or(line.len());
            let rest = line.get(name_end..).unwrap_or_default();
            let after_ws = rest.iter().position(|&c| !is_ws(c)).unwrap_or(rest.len());
            if HeaderKind::of(line.get(..name_end).unwrap_or_default()) == HeaderKind::ContentLength
                && rest.get(after_ws) == Some(&b':')
            {
                let value =
                    std::str::from_utf8(rest.get(after_ws + 1..).unwrap_or_default()).unwrap_or("");
                let value = trim_lws(value);
                let n = match value.parse::<usize>() {
                    Ok(n) if value.bytes().all(|c| c.is_ascii_digit()) => n,
                    _ => {
                        return Framing::Invalid(ParseError::at(
                            ErrorKind::ContentLength,
                            format!("{value:?} is not a length"),
                            pos,
                        ));
                    }
                };
                if content_length.is_some_and(|c| c != n) {
                    return Framing::Invalid(ParseError::at(
                        ErrorKind::ContentLength,
                        "conflicting values",
                        pos,
                    ));
                }
                content_length = Some(n);
            }
        }
        first_line = false;
        pos = nl + 1;
    };
    let Some(body_len) = content_length else {
        return Framing::Invalid(ParseError::new(
            ErrorKind::ContentLength,
            "missing on a stream transport",
        ));
    };
    let total = head_end.saturating_add(body_len);
    if total > MAX_MESSAGE_SIZE {
        return Framing::Invalid(ParseError::new(
            ErrorKind::TooLarge,
            format!("{total} bytes"),
        ));
    }
    if buf.len() >= total {
        Framing::Complete(total)
    } else {
        Framing::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] =
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";

    #[test]
    fn frames_messages_and_keepalives() {
        assert_eq!(frame_stream(b"\r\n\r\nOPTIONS"), Framing::Complete(4));
        assert_eq!(frame_stream(MSG), Framing::Complete(MSG.len()));
        let mut two = MSG.to_vec();
        two.extend_from_slice(MSG);
        assert_eq!(frame_stream(&two), Framing::Complete(MSG.len()));
        for cut in 1..MSG.len() {
            assert_eq!(
                frame_stream(&MSG[..cut]),
                Framing::Incomplete,
                "cut at {cut}"
            );
        }
        assert_eq!(frame_stream(b""), Framing::Incomplete);
    }

    #[test]
    fn rejects_missing_or_bad_length() {
        let no_len = b"OPTIONS sip:a@b SIP/2.0\r\nVia: x\r\n\r\n";
        assert!(
            matches!(frame_stream(no_len), Framing::Invalid(e) if e.kind() == ErrorKind::ContentLength)
        );
        let neg = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: -1\r\n\r\n";
        assert!(matches!(frame_stream(neg), Framing::Invalid(_)));
        let conflict = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab";
        assert!(matches!(frame_stream(conflict), Framing::Invalid(_)));
        let huge = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 99999999999\r\n\r\n";
        assert!(matches!(frame_stream(huge), Framing::Invalid(_)));
    }
}
