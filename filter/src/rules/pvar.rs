//! Pseudo-variables (`$rU`, `$fu`, `$hdr(Name)`, ...) and string templates made of them,
//! resolved against the message of a hook call.

use std::borrow::Cow;

use super::RuleErrorKind;
use crate::host::SipMessage;
use crate::nameaddr::{NameAddr, UriParts};
use crate::req_send::{ReqField, UacReq};

/// What a hook call knows beside its messages: the `$uac_req(...)` fields as set so far,
/// the variables of the event being handled (`$event(name)`), the script variables of this
/// call (`$var(name)`) and those of the transaction (`$avp(name)`).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub uac_req: Option<&'a UacReq>,
    pub event: &'a [(String, String)],
    pub vars: &'a Variables,
    pub avps: &'a Variables,
}

static NO_VARIABLES: Variables = Variables(Vec::new());

impl Default for Scope<'_> {
    fn default() -> Self {
        Scope {
            uac_req: None,
            event: &[],
            vars: &NO_VARIABLES,
            avps: &NO_VARIABLES,
        }
    }
}

/// Script variables by name (`$var`, `$avp`): few per call, so a list.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Variables(Vec<(String, String)>);

impl Variables {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (`Some`) or deletes (`None`) a variable.
    pub fn set(&mut self, name: &str, value: Option<String>) {
        let at = self.0.iter().position(|(n, _)| n == name);
        match (at, value) {
            (Some(i), Some(v)) => self.0[i].1 = v,
            (None, Some(v)) => self.0.push((name.to_owned(), v)),
            (Some(i), None) => {
                self.0.swap_remove(i);
            }
            (None, None) => {}
        }
    }
}

/// Where a script variable lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarScope {
    /// `$var(name)`: this hook call only (Kamailio's are per process and leak between
    /// messages; these start empty every call).
    Call,
    /// `$avp(name)`: the transaction, from its request rules to its reply and failure
    /// rules (kept by the host beside the transaction).
    Transaction,
}

/// A pseudo-variable, checked at configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pvar {
    /// `$null`: no value.
    Null,
    Method,
    RUri,
    RUser,
    RHost,
    RPort,
    Addr(Field, AddrPart),
    CallId,
    CSeq,
    Status,
    Reason,
    SourceIp,
    SourcePort,
    UserAgent,
    /// `$endpoint`: the endpoint `[tenant.access]` identified the request as.
    Endpoint,
    Header(String),
    /// `$uac_req(field)`.
    UacReq(ReqField),
    /// `$event(name)`: a variable of the event an `on = "event"` rule handles.
    Event(String),
    /// `$var(name)` / `$avp(name)`.
    Script(VarScope, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    From,
    To,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrPart {
    Uri,
    User,
    Host,
    Display,
    Tag,
}

impl Pvar {
    /// Resolves a name from the rule text (`rU`, `hdr` with argument `X-Foo`).
    pub fn from_name(name: &str, arg: Option<&str>) -> Result<Pvar, RuleErrorKind> {
        let unknown = || {
            RuleErrorKind::UnknownVariable(match arg {
                Some(a) => format!("${name}({a})"),
                None => format!("${name}"),
            })
        };
        if name == "hdr" {
            let a = arg.filter(|a| valid_header_name(a)).ok_or_else(unknown)?;
            return Ok(Pvar::Header(a.to_owned()));
        }
        if name == "uac_req" {
            let field = arg.and_then(ReqField::parse).ok_or_else(unknown)?;
            return Ok(Pvar::UacReq(field));
        }
        if name == "event" {
            let a = arg.filter(|a| valid_header_name(a)).ok_or_else(unknown)?;
            return Ok(Pvar::Event(a.to_owned()));
        }
        if let Some(scope) = VarScope::from_name(name) {
            let a = arg.filter(|a| valid_var_name(a)).ok_or_else(unknown)?;
            return Ok(Pvar::Script(scope, a.to_owned()));
        }
        if arg.is_some() {
            return Err(unknown());
        }
        use AddrPart::*;
        Ok(match name {
            "null" => Pvar::Null,
            "rm" => Pvar::Method,
            "ru" => Pvar::RUri,
            "rU" => Pvar::RUser,
            "rd" => Pvar::RHost,
            "rp" => Pvar::RPort,
            "fu" => Pvar::Addr(Field::From, Uri),
            "fU" => Pvar::Addr(Field::From, User),
            "fd" => Pvar::Addr(Field::From, Host),
            "fn" => Pvar::Addr(Field::From, Display),
            "ft" => Pvar::Addr(Field::From, Tag),
            "tu" => Pvar::Addr(Field::To, Uri),
            "tU" => Pvar::Addr(Field::To, User),
            "td" => Pvar::Addr(Field::To, Host),
            "tn" => Pvar::Addr(Field::To, Display),
            "tt" => Pvar::Addr(Field::To, Tag),
            "ci" => Pvar::CallId,
            "cs" => Pvar::CSeq,
            "rs" => Pvar::Status,
            "rr" => Pvar::Reason,
            "si" => Pvar::SourceIp,
            "sp" => Pvar::SourcePort,
            "ua" => Pvar::UserAgent,
            "endpoint" => Pvar::Endpoint,
            _ => return Err(unknown()),
        })
    }

    /// The value in this hook call; `None` when absent. `reply` is the reply of a failure
    /// hook, which `$rs` and `$rr` read.
    pub fn get<M: SipMessage + ?Sized>(&self, msg: &M, reply: Option<&M>) -> Option<String> {
        self.get_in(msg, reply, Scope::default())
    }

    /// The value with the `$uac_req` fields and event variables of `scope`.
    pub fn get_in<M: SipMessage + ?Sized>(
        &self,
        msg: &M,
        reply: Option<&M>,
        scope: Scope<'_>,
    ) -> Option<String> {
        match self {
            Pvar::UacReq(field) => scope.uac_req.and_then(|r| r.get(*field)),
            Pvar::Event(name) => scope
                .event
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone()),
            Pvar::Script(VarScope::Call, name) => scope.vars.get(name).map(str::to_owned),
            Pvar::Script(VarScope::Transaction, name) => scope.avps.get(name).map(str::to_owned),
            Pvar::Null => None,
            Pvar::Method => msg.method().or_else(|| cseq_method(msg)),
            Pvar::RUri => msg.request_uri(),
            Pvar::RUser => ruri_part(msg, |p| p.user.map(str::to_owned)),
            Pvar::RHost => ruri_part(msg, |p| Some(p.host.to_owned())),
            Pvar::RPort => ruri_part(msg, |p| {
                Some(p.port.map_or_else(
                    || if p.secure { "5061" } else { "5060" }.to_owned(),
                    str::to_owned,
                ))
            }),
            Pvar::Addr(field, part) => {
                let value = msg.header(match field {
                    Field::From => "From",
                    Field::To => "To",
                })?;
                let na = NameAddr::parse(&value)?;
                match part {
                    AddrPart::Uri => Some(na.uri(&value).to_owned()),
                    AddrPart::Display => na.display(&value).map(str::to_owned),
                    AddrPart::Tag => na.param(&value, "tag").map(str::to_owned),
                    AddrPart::User => UriParts::parse(na.uri(&value))?.user.map(str::to_owned),
                    AddrPart::Host => Some(UriParts::parse(na.uri(&value))?.host.to_owned()),
                }
            }
            Pvar::CallId => msg.header("Call-ID"),
            Pvar::CSeq => msg
                .header("CSeq")
                .and_then(|c| c.split_whitespace().next().map(str::to_owned)),
            Pvar::Status => reply.unwrap_or(msg).status().map(|s| s.to_string()),
            Pvar::Reason => reply.unwrap_or(msg).reason(),
            Pvar::SourceIp => split_address(&msg.source()).map(|(ip, _)| ip.to_owned()),
            Pvar::SourcePort => split_address(&msg.source()).map(|(_, port)| port.to_owned()),
            Pvar::UserAgent => msg.header("User-Agent"),
            // On a failure hook `msg` is the request, which carries it.
            Pvar::Endpoint => msg.endpoint(),
            Pvar::Header(name) => msg.header(name),
        }
    }
}

fn cseq_method<M: SipMessage + ?Sized>(msg: &M) -> Option<String> {
    msg.header("CSeq")
        .and_then(|c| c.split_whitespace().nth(1).map(str::to_owned))
}

fn ruri_part<M: SipMessage + ?Sized>(
    msg: &M,
    f: impl FnOnce(&UriParts<'_>) -> Option<String>,
) -> Option<String> {
    let uri = msg.request_uri()?;
    f(&UriParts::parse(&uri)?)
}

fn split_address(addr: &str) -> Option<(&str, &str)> {
    let (ip, port) = addr.rsplit_once(':')?;
    Some((ip.trim_start_matches('[').trim_end_matches(']'), port))
}

impl VarScope {
    /// `var` or `avp`, the names before the parentheses.
    pub fn from_name(name: &str) -> Option<VarScope> {
        match name {
            "var" => Some(VarScope::Call),
            "avp" => Some(VarScope::Transaction),
            _ => None,
        }
    }
}

/// A script variable's name: letters, digits and `_`, not starting with a digit.
pub fn valid_var_name(name: &str) -> bool {
    name.bytes().next().is_some_and(|b| !b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.!%*+`'~".contains(&b))
}

/// A string with pseudo-variables in it (`"sip:$rU@$rd"`); an absent variable reads as "".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Pvar),
}

impl Template {
    /// The script variable this template is, and nothing else (`"$avp(auser)"`).
    pub fn single_variable(&self) -> Option<(VarScope, &str)> {
        match self.parts.as_slice() {
            [Part::Var(Pvar::Script(scope, name))] => Some((*scope, name)),
            _ => None,
        }
    }

    /// Whether any part is a `$avp(...)` variable.
    pub fn reads_avps(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Var(Pvar::Script(VarScope::Transaction, _))))
    }

    pub fn parse(text: &str) -> Result<Template, RuleErrorKind> {
        let mut parts = Vec::new();
        let mut rest = 0;
        let mut i = 0;
        let bytes = text.as_bytes();
        while i < bytes.len() {
            if bytes[i] == b'$' && bytes.get(i + 1).is_some_and(|b| b.is_ascii_alphabetic()) {
                if rest < i {
                    parts.push(Part::Text(text[rest..i].to_owned()));
                }
                let (name, arg, next) = super::lex::pvar(text, i)?;
                parts.push(Part::Var(Pvar::from_name(&name, arg.as_deref())?));
                i = next;
                rest = next;
            } else {
                i += 1;
            }
        }
        if rest < text.len() {
            parts.push(Part::Text(text[rest..].to_owned()));
        }
        Ok(Template { parts })
    }

    /// Whether the template has no variable (its whole text is [`Self::literal_prefix`]).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// The literal text before the first variable.
    pub fn literal_prefix(&self) -> &str {
        match self.parts.first() {
            Some(Part::Text(t)) => t,
            _ => "",
        }
    }

    pub fn render<M: SipMessage + ?Sized>(&self, msg: &M, reply: Option<&M>) -> Cow<'_, str> {
        self.render_in(msg, reply, Scope::default())
    }

    /// Rendered with the `$uac_req` fields and event variables of `scope`.
    pub fn render_in<M: SipMessage + ?Sized>(
        &self,
        msg: &M,
        reply: Option<&M>,
        scope: Scope<'_>,
    ) -> Cow<'_, str> {
        match self.parts.as_slice() {
            [] => Cow::Borrowed(""),
            [Part::Text(t)] => Cow::Borrowed(t),
            parts => {
                let mut out = String::new();
                for p in parts {
                    match p {
                        Part::Text(t) => out.push_str(t),
                        Part::Var(v) => {
                            out.push_str(&v.get_in(msg, reply, scope).unwrap_or_default())
                        }
                    }
                }
                Cow::Owned(out)
            }
        }
    }
}
