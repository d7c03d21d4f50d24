//! Answers to requests that failed to parse: a lenient scan salvages the headers a
//! response needs so a stateless 400 (or 505) can go back to the sender.

use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;

use crate::error::{ErrorKind, ParseError};
use crate::header::{CommaValues, HeaderKind, first_semicolon, is_token_byte, trim_lws};
use crate::via::Via;

/// Builds the response to send for a request that failed with `err`: 505 for an unsupported
/// version, else `400 Bad Request (<what was wrong>)`.
///
/// Returns `None` unless `raw` looks like a request other than ACK and its Via, From, To,
/// Call-ID and CSeq can be read. A To tag is added if missing; it is derived from the
/// request so a retransmission gets the same answer.
pub fn reply_to_malformed(raw: &[u8], err: &ParseError) -> Option<Bytes> {
    let start = raw.iter().position(|&c| c != b'\r' && c != b'\n')?;
    let raw = &raw[start..];
    let mut lines = raw
        .split(|&c| c == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next()?;
    let method_len = request_line.iter().position(|&c| c == b' ')?;
    let method = &request_line[..method_len];
    if method.is_empty() || !method.iter().all(|&c| is_token_byte(c)) || method == b"ACK" {
        return None;
    }
    // Unfold continuation lines and collect the salvageable headers.
    let mut fields: Vec<(HeaderKind, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.first().is_some_and(|&c| c == b' ' || c == b'\t') {
            if let Some((_, v)) = fields.last_mut() {
                v.push(' ');
                v.push_str(&clean(line));
            }
            continue;
        }
        let Some(colon) = line.iter().position(|&c| c == b':') else {
            continue;
        };
        let name = trim_lws(std::str::from_utf8(&line[..colon]).unwrap_or(""));
        let kind = HeaderKind::of(name.as_bytes());
        if kind != HeaderKind::Other {
            fields.push((kind, clean(&line[colon + 1..])));
        }
    }
    let first = |kind: HeaderKind| {
        fields
            .iter()
            .find(|(k, v)| *k == kind && !trim_lws(v).is_empty())
            .map(|(_, v)| trim_lws(v).to_owned())
    };
    let vias: Vec<String> = fields
        .iter()
        .filter(|(k, _)| *k == HeaderKind::Via)
        .flat_map(|(_, v)| CommaValues::new(v))
        .filter_map(salvage_via)
        .collect();
    let (from, mut to, call_id, cseq) = (
        first(HeaderKind::From)?,
        first(HeaderKind::To)?,
        first(HeaderKind::CallId)?,
        first(HeaderKind::CSeq)?,
    );
    if vias.is_empty() {
        return None;
    }
    if !to.to_ascii_lowercase().contains(";tag=") {
        let mut h = DefaultHasher::new();
        (&call_id, &from, &cseq, vias.first()).hash(&mut h);
        to.push_str(&format!(";tag={:016x}", h.finish()));
    }
    let status = err.kind().status_code();
    let reason = match err.kind() {
        ErrorKind::UnsupportedVersion => "Version Not Supported".to_owned(),
        kind => format!("Bad Request ({})", kind.as_str()),
    };
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for via in vias {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    out.push_str(&format!("From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"));
    Some(Bytes::from(out))
}

/// A Via value as sent if it parses, else with empty parameters dropped if that makes it
/// parse (`SIP/2.0/UDP host;;` becomes `SIP/2.0/UDP host`), else `None`.
fn salvage_via(value: &str) -> Option<String> {
    if Via::parse(value).is_ok() {
        return Some(value.to_owned());
    }
    let head_end = first_semicolon(value);
    let mut out = trim_lws(&value[..head_end]).to_owned();
    let mut rest = &value[head_end..];
    while let Some(after) = rest.strip_prefix(';') {
        let end = first_semicolon(after);
        let param = trim_lws(&after[..end]);
        if !param.is_empty() {
            out.push(';');
            out.push_str(param);
        }
        rest = &after[end..];
    }
    Via::parse(&out).is_ok().then_some(out)
}

/// Lossy UTF-8 with control characters (other than HT) replaced by SP.
fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect()
}
