//! From/To replacement with Kamailio's rules (display verbatim, empty display removes it,
//! `<>` added where needed, tags untouched): the text edit itself and the Rust API over a message.

use thiserror::Error;

use crate::host::SipMessage;
use crate::nameaddr::NameAddr;

/// Which of the two headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    From,
    To,
}

impl Field {
    pub fn header(self) -> &'static str {
        match self {
            Field::From => "From",
            Field::To => "To",
        }
    }

    pub fn other(self) -> Field {
        match self {
            Field::From => Field::To,
            Field::To => Field::From,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReplaceError {
    #[error("the message has no {0} header")]
    Missing(&'static str),
    #[error("the {0} header is not a valid name-addr")]
    Unparsable(&'static str),
    #[error("the new URI {0:?} is empty or contains spaces, quotes or angle brackets")]
    BadUri(String),
    #[error("the new display name {0:?} contains a line break or angle bracket")]
    BadDisplay(String),
}

/// What a replacement changed: the header's URI and display before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    /// The header value as it was.
    pub old_value: String,
    pub old_uri: String,
    pub old_display: Option<String>,
    pub new_value: String,
    pub new_uri: String,
    pub new_display: Option<String>,
}

/// Replaces URI and (if `display` is given) display name in a From/To value, keeping the
/// header parameters. `Some("")` removes the display; `None` leaves it as it is.
pub fn replace_value(
    value: &str,
    display: Option<&str>,
    uri: &str,
    field: Field,
) -> Result<String, ReplaceError> {
    if uri.is_empty()
        || uri
            .bytes()
            .any(|b| b.is_ascii_whitespace() || matches!(b, b'<' | b'>' | b'"'))
    {
        return Err(ReplaceError::BadUri(uri.to_owned()));
    }
    if let Some(d) = display
        && d.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'<' | b'>'))
    {
        return Err(ReplaceError::BadDisplay(d.to_owned()));
    }
    let na = NameAddr::parse(value).ok_or(ReplaceError::Unparsable(field.header()))?;
    let mut out = String::with_capacity(value.len() + uri.len() + display.map_or(0, str::len) + 3);
    out.push_str(&value[..na.start]);
    // Where the untouched text between display and `<` (the spaces) begins.
    let bracket_from = match (display, &na.display, na.lt) {
        (None, _, Some(lt)) => {
            out.push_str(&value[na.start..lt]);
            Some(lt)
        }
        (Some(""), _, Some(lt)) => Some(lt),
        (Some(d), Some(old), Some(lt)) => {
            out.push_str(d);
            out.push_str(&value[old.end..lt]);
            Some(lt)
        }
        (Some(d), None, Some(lt)) => {
            out.push_str(d);
            out.push(' ');
            Some(lt)
        }
        (_, _, None) => None,
    };
    match bracket_from {
        Some(_) => {
            out.push('<');
            out.push_str(uri);
            out.push('>');
        }
        None => {
            // A bare URI gets brackets when a display is added or the new URI has
            // parameters that would otherwise read as header parameters.
            let display = display.filter(|d| !d.is_empty());
            if let Some(d) = display {
                out.push_str(d);
                out.push(' ');
            }
            if display.is_some() || uri.contains(';') {
                out.push('<');
                out.push_str(uri);
                out.push('>');
            } else {
                out.push_str(uri);
            }
        }
    }
    out.push_str(&value[na.rest..]);
    Ok(out)
}

/// Replaces From or To of `msg` (Kamailio's `uac_replace_from/to` without the restore
/// bookkeeping, which [`crate::uac::Uac`] adds). Returns what changed.
pub fn replace<M: SipMessage + ?Sized>(
    msg: &mut M,
    field: Field,
    display: Option<&str>,
    uri: &str,
) -> Result<Replaced, ReplaceError> {
    let old_value = msg
        .header(field.header())
        .ok_or(ReplaceError::Missing(field.header()))?;
    let na = NameAddr::parse(&old_value).ok_or(ReplaceError::Unparsable(field.header()))?;
    let new_value = replace_value(&old_value, display, uri, field)?;
    msg.set_header(field.header(), &new_value);
    Ok(Replaced {
        old_uri: na.uri(&old_value).to_owned(),
        old_display: na.display(&old_value).map(str::to_owned),
        new_uri: uri.to_owned(),
        new_display: match display {
            Some("") => None,
            Some(d) => Some(d.to_owned()),
            None => na.display(&old_value).map(str::to_owned),
        },
        old_value,
        new_value,
    })
}

/// Replaces the From header (`uac_replace_from`).
pub fn replace_from<M: SipMessage + ?Sized>(
    msg: &mut M,
    display: Option<&str>,
    uri: &str,
) -> Result<Replaced, ReplaceError> {
    replace(msg, Field::From, display, uri)
}

/// Replaces the To header (`uac_replace_to`).
pub fn replace_to<M: SipMessage + ?Sized>(
    msg: &mut M,
    display: Option<&str>,
    uri: &str,
) -> Result<Replaced, ReplaceError> {
    replace(msg, Field::To, display, uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(value: &str, display: Option<&str>, uri: &str) -> String {
        replace_value(value, display, uri, Field::From).unwrap()
    }

    #[test]
    fn display_is_replaced_verbatim_and_tag_kept() {
        assert_eq!(
            r(
                "\"Alice\" <sip:alice@example.com>;tag=ftag0",
                Some("\"Anonymous\""),
                "sip:anonymous@anonymous.invalid"
            ),
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=ftag0"
        );
        assert_eq!(
            r("Alice   <sip:a@b>;tag=1", Some("Bob"), "sip:c@d"),
            "Bob   <sip:c@d>;tag=1"
        );
    }

    #[test]
    fn uri_only_keeps_display() {
        assert_eq!(
            r("\"Alice\" <sip:a@b>;tag=1", None, "sip:c@d"),
            "\"Alice\" <sip:c@d>;tag=1"
        );
    }

    #[test]
    fn empty_display_removes_it_and_its_spaces() {
        assert_eq!(
            r("\"Alice\"  <sip:a@b>;tag=1", Some(""), "sip:c@d"),
            "<sip:c@d>;tag=1"
        );
        assert_eq!(r("sip:a@b;tag=1", Some(""), "sip:c@d"), "sip:c@d;tag=1");
    }

    #[test]
    fn display_inserted_where_there_was_none() {
        assert_eq!(
            r("<sip:a@b>;tag=1", Some("\"X\""), "sip:c@d"),
            "\"X\" <sip:c@d>;tag=1"
        );
        assert_eq!(
            r("sip:a@b;tag=1", Some("\"X\""), "sip:c@d"),
            "\"X\" <sip:c@d>;tag=1"
        );
    }

    #[test]
    fn bare_uri_gets_brackets_only_when_needed() {
        assert_eq!(
            r(
                "sip:1000@pbx.local;tag=ftag3",
                None,
                "sip:+4930999@trunk.example.com"
            ),
            "sip:+4930999@trunk.example.com;tag=ftag3"
        );
        assert_eq!(
            r("sip:1000@pbx.local;tag=t", None, "sip:x@y;user=phone"),
            "<sip:x@y;user=phone>;tag=t"
        );
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(
            replace_value("sip:a@b", None, "sip:a b", Field::To),
            Err(ReplaceError::BadUri("sip:a b".into()))
        );
        assert_eq!(
            replace_value("sip:a@b", Some("x\r\nVia: y"), "sip:c@d", Field::To),
            Err(ReplaceError::BadDisplay("x\r\nVia: y".into()))
        );
        assert_eq!(
            replace_value("\"open <sip:a@b>", None, "sip:c@d", Field::To),
            Err(ReplaceError::Unparsable("To"))
        );
    }
}
