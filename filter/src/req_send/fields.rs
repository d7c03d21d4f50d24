//! The `$uac_req(...)` fields of Kamailio 6.1 a rule or the RPC sets before
//! `uac_req_send()`, checked as they are set, and the request built from them.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::host::OutgoingRequest;

/// One `$uac_req(name)`: every field of Kamailio 6.1, plus `all` (only to reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqField {
    Method,
    Ruri,
    Furi,
    Turi,
    Ouri,
    Hdrs,
    Body,
    Callid,
    Sock,
    Auser,
    Apasswd,
    Flags,
    Evroute,
    Evparam,
    Evcode,
    Evtype,
    Cseqno,
    FrTimeout,
    FrInvTimeout,
    Ftag,
    Ttag,
    /// `$uac_req(all) = $null` clears every field.
    All,
}

impl ReqField {
    const NAMES: [(&'static str, ReqField); 22] = [
        ("method", ReqField::Method),
        ("ruri", ReqField::Ruri),
        ("furi", ReqField::Furi),
        ("turi", ReqField::Turi),
        ("ouri", ReqField::Ouri),
        ("hdrs", ReqField::Hdrs),
        ("body", ReqField::Body),
        ("callid", ReqField::Callid),
        ("sock", ReqField::Sock),
        ("auser", ReqField::Auser),
        ("apasswd", ReqField::Apasswd),
        ("flags", ReqField::Flags),
        ("evroute", ReqField::Evroute),
        ("evparam", ReqField::Evparam),
        ("evcode", ReqField::Evcode),
        ("evtype", ReqField::Evtype),
        ("cseqno", ReqField::Cseqno),
        ("fr_timeout", ReqField::FrTimeout),
        ("fr_inv_timeout", ReqField::FrInvTimeout),
        ("ftag", ReqField::Ftag),
        ("ttag", ReqField::Ttag),
        ("all", ReqField::All),
    ];

    pub fn parse(name: &str) -> Option<ReqField> {
        Self::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
            .map(|(_, f)| *f)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("all", |(n, _)| n)
    }

    /// `evcode` and `evtype` are set by the host's reply, never by a rule.
    pub fn is_read_only(self) -> bool {
        matches!(self, ReqField::Evcode | ReqField::Evtype)
    }

    fn is_number(self) -> bool {
        matches!(
            self,
            ReqField::Flags
                | ReqField::Evroute
                | ReqField::Cseqno
                | ReqField::FrTimeout
                | ReqField::FrInvTimeout
                | ReqField::Evcode
                | ReqField::Evtype
        )
    }
}

/// `$uac_req(flags)` bit 0: `apasswd` is HA1 in hex (Kamailio's UAC_REQ_FLAG_HA1).
pub const FLAG_HA1: u32 = 1;
/// tm's first CSeq of a new dialog (DEFAULT_CSEQ) when `cseqno` is not set.
pub const DEFAULT_CSEQ: u32 = 10;

/// Why a field cannot take a value or the request cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReqError {
    #[error("uac_req_send: $uac_req({0}) is required")]
    Missing(&'static str),
    #[error("$uac_req({field}): {value:?} is not a non-negative integer")]
    NotNumber { field: &'static str, value: String },
    #[error("$uac_req({0}) is set by the reply, not assignable")]
    ReadOnly(&'static str),
    #[error("$uac_req(all) can only be reset ($uac_req(all) = $null)")]
    AllNeedsNull,
    #[error("$uac_req({field}) must be one line (no CR or LF)")]
    Multiline { field: &'static str },
    #[error("$uac_req(hdrs): {0:?} is not a \"Name: value\" header line")]
    BadHeader(String),
    #[error(
        "$uac_req(hdrs): {0} is built from the other fields (ruri, furi, turi, callid, cseqno, ftag, ttag)"
    )]
    ReservedHeader(String),
    #[error("$uac_req(sock): {0:?} is not proto:host:port with proto udp or tcp")]
    BadSocket(String),
    #[error("$uac_req(method): {0:?} is not a SIP method token")]
    BadMethod(String),
    #[error("$uac_req(method): ACK is sent within a dialog, never by uac_req_send")]
    Ack,
}

/// The fields as set; empty strings and zero are "not set", as in Kamailio.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UacReq {
    pub method: String,
    pub ruri: String,
    pub furi: String,
    pub turi: String,
    pub ouri: String,
    pub hdrs: String,
    pub body: String,
    pub callid: String,
    pub sock: String,
    pub auser: String,
    pub apasswd: String,
    pub flags: u32,
    pub evroute: u32,
    pub evparam: String,
    pub evcode: u32,
    pub evtype: u32,
    pub cseqno: u32,
    pub fr_timeout: u32,
    pub fr_inv_timeout: u32,
    pub ftag: String,
    pub ttag: String,
}

/// What the host's random source gives a new request: Call-ID and From tag when the
/// fields leave them unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    pub call_id: String,
    pub from_tag: String,
}

impl UacReq {
    /// `$uac_req(field) = value`; `None` (`$null`) clears it.
    pub fn set(&mut self, field: ReqField, value: Option<&str>) -> Result<(), ReqError> {
        if field.is_read_only() {
            return Err(ReqError::ReadOnly(field.name()));
        }
        if field == ReqField::All {
            return match value {
                None => {
                    *self = UacReq::default();
                    Ok(())
                }
                Some(_) => Err(ReqError::AllNeedsNull),
            };
        }
        self.set_unchecked(field, value)
    }

    /// Sets any field, `evcode` and `evtype` included (the reply sets those).
    fn set_unchecked(&mut self, field: ReqField, value: Option<&str>) -> Result<(), ReqError> {
        let text = value.unwrap_or("");
        if field.is_number() {
            let n = if text.trim().is_empty() {
                0
            } else {
                text.trim()
                    .parse::<u32>()
                    .map_err(|_| ReqError::NotNumber {
                        field: field.name(),
                        value: text.to_owned(),
                    })?
            };
            *self.number_mut(field) = n;
            return Ok(());
        }
        let one_line = !matches!(field, ReqField::Hdrs | ReqField::Body);
        if one_line && text.contains(['\r', '\n']) {
            return Err(ReqError::Multiline {
                field: field.name(),
            });
        }
        *self.text_mut(field) = text.to_owned();
        Ok(())
    }

    fn number_mut(&mut self, field: ReqField) -> &mut u32 {
        match field {
            ReqField::Flags => &mut self.flags,
            ReqField::Evroute => &mut self.evroute,
            ReqField::Cseqno => &mut self.cseqno,
            ReqField::FrTimeout => &mut self.fr_timeout,
            ReqField::FrInvTimeout => &mut self.fr_inv_timeout,
            ReqField::Evcode => &mut self.evcode,
            _ => &mut self.evtype,
        }
    }

    fn text_mut(&mut self, field: ReqField) -> &mut String {
        match field {
            ReqField::Method => &mut self.method,
            ReqField::Ruri => &mut self.ruri,
            ReqField::Furi => &mut self.furi,
            ReqField::Turi => &mut self.turi,
            ReqField::Ouri => &mut self.ouri,
            ReqField::Hdrs => &mut self.hdrs,
            ReqField::Body => &mut self.body,
            ReqField::Callid => &mut self.callid,
            ReqField::Sock => &mut self.sock,
            ReqField::Auser => &mut self.auser,
            ReqField::Apasswd => &mut self.apasswd,
            ReqField::Evparam => &mut self.evparam,
            ReqField::Ftag => &mut self.ftag,
            _ => &mut self.ttag,
        }
    }

    /// The value as `$uac_req(field)` reads it; `None` for an unset string.
    /// `apasswd` reads back too (rules may compare it), but never goes to a log.
    pub fn get(&self, field: ReqField) -> Option<String> {
        let number = match field {
            ReqField::Flags => self.flags,
            ReqField::Evroute => self.evroute,
            ReqField::Cseqno => self.cseqno,
            ReqField::FrTimeout => self.fr_timeout,
            ReqField::FrInvTimeout => self.fr_inv_timeout,
            ReqField::Evcode => self.evcode,
            ReqField::Evtype => self.evtype,
            ReqField::All => return None,
            text => {
                let value = match text {
                    ReqField::Method => &self.method,
                    ReqField::Ruri => &self.ruri,
                    ReqField::Furi => &self.furi,
                    ReqField::Turi => &self.turi,
                    ReqField::Ouri => &self.ouri,
                    ReqField::Hdrs => &self.hdrs,
                    ReqField::Body => &self.body,
                    ReqField::Callid => &self.callid,
                    ReqField::Sock => &self.sock,
                    ReqField::Auser => &self.auser,
                    ReqField::Apasswd => &self.apasswd,
                    ReqField::Evparam => &self.evparam,
                    ReqField::Ftag => &self.ftag,
                    _ => &self.ttag,
                };
                return (!value.is_empty()).then(|| value.clone());
            }
        };
        Some(number.to_string())
    }

    /// Whether a reply must come back to the filter: to answer a challenge or to raise
    /// `uac:reply` (Kamailio registers its tm callback in exactly these cases).
    pub fn wants_reply(&self) -> bool {
        self.evroute != 0 || (!self.auser.is_empty() && !self.apasswd.is_empty())
    }

    /// `fr_timeout` in ms, if set: the wait for a non-INVITE's final reply and for an
    /// INVITE's first reply.
    pub fn timeout_ms(&self) -> Option<u32> {
        (self.fr_timeout != 0).then_some(self.fr_timeout)
    }

    /// `fr_inv_timeout` in ms for an INVITE, if set: once it rang, the wait after each
    /// provisional reply (tm's `restart_fr_on_each_reply`).
    pub fn invite_timeout_ms(&self) -> Option<u32> {
        let invite = self.method.trim().eq_ignore_ascii_case("INVITE");
        (invite && self.fr_inv_timeout != 0).then_some(self.fr_inv_timeout)
    }

    /// The request as tm's `t_request` builds it: To and From default to the Request-URI,
    /// the From tag is `ftag` or fresh, To carries `ttag` when set, the Call-ID is `callid`
    /// or fresh, CSeq is `cseq` (the first one: `cseqno`, else 10).
    pub fn build(&self, fresh: &Fresh, cseq: u32) -> Result<OutgoingRequest, ReqError> {
        let method = self.method.trim();
        if method.is_empty() {
            return Err(ReqError::Missing("method"));
        }
        if self.ruri.trim().is_empty() {
            return Err(ReqError::Missing("ruri"));
        }
        if !method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        {
            return Err(ReqError::BadMethod(method.to_owned()));
        }
        if method.eq_ignore_ascii_case("ACK") {
            return Err(ReqError::Ack);
        }
        let ruri = self.ruri.trim();
        let name_addr = |uri: &str| {
            if uri.contains('<') {
                uri.to_owned()
            } else {
                format!("<{uri}>")
            }
        };
        let furi = if self.furi.is_empty() {
            ruri
        } else {
            &self.furi
        };
        let turi = if self.turi.is_empty() {
            ruri
        } else {
            &self.turi
        };
        let ftag = if self.ftag.is_empty() {
            &fresh.from_tag
        } else {
            &self.ftag
        };
        let mut to = name_addr(turi);
        if !self.ttag.is_empty() {
            to.push_str(";tag=");
            to.push_str(&self.ttag);
        }
        let call_id = if self.callid.is_empty() {
            &fresh.call_id
        } else {
            &self.callid
        };
        let mut headers = vec![
            ("From".to_owned(), format!("{};tag={ftag}", name_addr(furi))),
            ("To".to_owned(), to),
            ("Call-ID".to_owned(), call_id.clone()),
            ("CSeq".to_owned(), format!("{cseq} {method}")),
        ];
        headers.extend(parse_hdrs(&self.hdrs)?);
        // `sock` is the listener to send from; the next hop must use its protocol.
        let socket = self.socket()?;
        let next_hop = match socket {
            Some((proto, _)) => Some(with_transport(
                if self.ouri.is_empty() {
                    ruri
                } else {
                    &self.ouri
                },
                proto,
            )),
            None => (!self.ouri.is_empty()).then(|| self.ouri.clone()),
        };
        Ok(OutgoingRequest {
            method: method.to_owned(),
            request_uri: ruri.to_owned(),
            headers,
            body: self.body.as_bytes().to_vec(),
            next_hop,
            timeout_ms: self.timeout_ms(),
            invite_timeout_ms: self.invite_timeout_ms(),
            local_socket: socket.map(|(_, sock)| sock.to_owned()),
        })
    }

    /// `sock` as `proto:host:port`: the protocol it names and the socket, `None` when unset.
    fn socket(&self) -> Result<Option<(&'static str, &str)>, ReqError> {
        let sock = self.sock.trim();
        if sock.is_empty() {
            return Ok(None);
        }
        let bad = || ReqError::BadSocket(sock.to_owned());
        let (proto, rest) = sock.split_once(':').ok_or_else(bad)?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "udp" => "udp",
            "tcp" => "tcp",
            _ => return Err(bad()),
        };
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        Ok(Some((proto, sock)))
    }
}

/// `uri` with `;transport=proto` unless it names a transport already.
fn with_transport(uri: &str, proto: &str) -> String {
    let bare = uri.trim().trim_start_matches('<');
    let bare = bare.split('>').next().unwrap_or(bare);
    if bare.to_ascii_lowercase().contains(";transport=") {
        return bare.to_owned();
    }
    // URI parameters go before any `?headers`.
    match bare.split_once('?') {
        Some((base, headers)) => format!("{base};transport={proto}?{headers}"),
        None => format!("{bare};transport={proto}"),
    }
}

/// Headers the fields themselves build; a line in `hdrs` would duplicate them.
const RESERVED: [&str; 10] = [
    "from",
    "f",
    "to",
    "t",
    "call-id",
    "i",
    "cseq",
    "via",
    "v",
    "content-length",
];

/// `hdrs`: header lines separated by CRLF (or LF), the last one's CRLF optional.
pub fn parse_hdrs(text: &str) -> Result<Vec<(String, String)>, ReqError> {
    let mut out = Vec::new();
    for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.trim().is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .filter(|(n, _)| {
                !n.trim().is_empty()
                    && n.trim()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.!%*+`'~".contains(&b))
            })
            .ok_or_else(|| ReqError::BadHeader(line.to_owned()))?;
        let name = name.trim();
        if RESERVED.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(ReqError::ReservedHeader(name.to_owned()));
        }
        out.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Fresh {
        Fresh {
            call_id: "cid-1".into(),
            from_tag: "ft-1".into(),
        }
    }

    fn message_req() -> UacReq {
        let mut r = UacReq::default();
        r.set(ReqField::Method, Some("MESSAGE")).unwrap();
        r.set(ReqField::Ruri, Some("sip:monitor@127.0.0.1:5090"))
            .unwrap();
        r
    }

    #[test]
    fn method_and_ruri_are_required() {
        let mut r = UacReq::default();
        assert_eq!(r.build(&fresh(), 10), Err(ReqError::Missing("method")));
        r.set(ReqField::Method, Some("MESSAGE")).unwrap();
        assert_eq!(r.build(&fresh(), 10), Err(ReqError::Missing("ruri")));
    }

    #[test]
    fn defaults_follow_tm() {
        let out = message_req().build(&fresh(), DEFAULT_CSEQ).unwrap();
        assert_eq!(out.method, "MESSAGE");
        assert_eq!(out.request_uri, "sip:monitor@127.0.0.1:5090");
        assert_eq!(
            out.headers,
            vec![
                (
                    "From".to_owned(),
                    "<sip:monitor@127.0.0.1:5090>;tag=ft-1".to_owned()
                ),
                ("To".to_owned(), "<sip:monitor@127.0.0.1:5090>".to_owned()),
                ("Call-ID".to_owned(), "cid-1".to_owned()),
                ("CSeq".to_owned(), "10 MESSAGE".to_owned()),
            ]
        );
        assert_eq!(out.next_hop, None);
        assert_eq!(out.timeout_ms, None);
        assert_eq!(out.invite_timeout_ms, None);
        assert_eq!(out.local_socket, None);
    }

    #[test]
    fn every_field_is_applied() {
        let mut r = message_req();
        for (field, value) in [
            ("furi", "\"Siphost\" <sip:alerts@siphost.test>"),
            ("turi", "sip:monitor@monitor.test"),
            ("ouri", "sip:127.0.0.1:5099"),
            ("hdrs", "Content-Type: text/plain\r\nX-Emergency: 112\r\n"),
            ("body", "call to 112"),
            ("callid", "fixed-call-id"),
            ("sock", "tcp:127.0.0.1:5060"),
            ("cseqno", "42"),
            ("fr_timeout", "2000"),
            ("fr_inv_timeout", "9000"),
            ("ftag", "myftag"),
            ("ttag", "mytotag"),
        ] {
            r.set(ReqField::parse(field).unwrap(), Some(value)).unwrap();
        }
        let out = r.build(&fresh(), r.cseqno).unwrap();
        let h = |n: &str| {
            out.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            h("From"),
            Some("\"Siphost\" <sip:alerts@siphost.test>;tag=myftag")
        );
        assert_eq!(h("To"), Some("<sip:monitor@monitor.test>;tag=mytotag"));
        assert_eq!(h("Call-ID"), Some("fixed-call-id"));
        assert_eq!(h("CSeq"), Some("42 MESSAGE"));
        assert_eq!(h("Content-Type"), Some("text/plain"));
        assert_eq!(h("X-Emergency"), Some("112"));
        assert_eq!(out.body, b"call to 112");
        assert_eq!(
            out.next_hop.as_deref(),
            Some("sip:127.0.0.1:5099;transport=tcp")
        );
        assert_eq!(out.local_socket.as_deref(), Some("tcp:127.0.0.1:5060"));
        assert_eq!(out.timeout_ms, Some(2000));
        // fr_inv_timeout is an INVITE's, after it rang; fr_timeout still guards its start.
        assert_eq!(out.invite_timeout_ms, None);
        r.set(ReqField::Method, Some("INVITE")).unwrap();
        let invite = r.build(&fresh(), r.cseqno).unwrap();
        assert_eq!(invite.timeout_ms, Some(2000));
        assert_eq!(invite.invite_timeout_ms, Some(9000));
    }

    #[test]
    fn bad_values_are_refused_when_set_or_built() {
        let mut r = message_req();
        assert!(matches!(
            r.set(ReqField::Flags, Some("one")),
            Err(ReqError::NotNumber { field: "flags", .. })
        ));
        assert_eq!(
            r.set(ReqField::Evcode, Some("200")),
            Err(ReqError::ReadOnly("evcode"))
        );
        assert!(r.set(ReqField::Ruri, Some("sip:a\r\nX: y")).is_err());
        r.set(ReqField::Hdrs, Some("Call-ID: other")).unwrap();
        assert_eq!(
            r.build(&fresh(), 10),
            Err(ReqError::ReservedHeader("Call-ID".into()))
        );
        r.set(ReqField::Hdrs, Some("no colon")).unwrap();
        assert!(matches!(r.build(&fresh(), 10), Err(ReqError::BadHeader(_))));
        r.set(ReqField::Hdrs, None).unwrap();
        r.set(ReqField::Sock, Some("sctp:127.0.0.1:5060")).unwrap();
        assert!(matches!(r.build(&fresh(), 10), Err(ReqError::BadSocket(_))));
        r.set(ReqField::All, None).unwrap();
        assert_eq!(r, UacReq::default());
        assert_eq!(r.set(ReqField::All, Some("x")), Err(ReqError::AllNeedsNull));
    }
}
