//! The functions a rule's `do` list may call: the one table that registers each name with
//! its argument counts and hooks, and the parsed [`Action`]s it builds.

use super::lex::{Token, tokenize};
use super::pvar::{Template, VarScope, valid_var_name};
use super::{Hook, RuleErrorKind};
use crate::reg::store::LookupKey;
use crate::req_send::{ReqField, UacReq};

/// A parsed call from a `do` list. Executed by [`crate::uac::Uac`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `uac_replace_from([display,] uri)`; `display: None` leaves the display as it is.
    ReplaceFrom {
        display: Option<Template>,
        uri: Template,
    },
    /// `uac_replace_to([display,] uri)`.
    ReplaceTo {
        display: Option<Template>,
        uri: Template,
    },
    /// `uac_restore_from()` (restore_mode = "manual").
    RestoreFrom,
    /// `uac_restore_to()`.
    RestoreTo,
    /// `append_hf("Name: value\r\n")`.
    AppendHf(Template),
    /// `remove_hf("Name")`.
    RemoveHf(String),
    /// `sl_send_reply(code, "reason")`.
    SlSendReply { code: u16, reason: Template },
    /// `t_relay()`: in a failure rule, send the request again; elsewhere, stop the rules and
    /// let the host relay.
    TRelay,
    /// `uac_auth()`, `uac_auth(mode)`, `uac_auth_mode(vmode)`: answer the reply's digest
    /// challenges on the request (failure hook). A failure ends the rules, the reply goes back.
    UacAuth(AuthMode),
    /// `$uac_req(field) = value` (`$null`: clear; `$uac_req(all) = $null` clears all).
    SetUacReq {
        field: ReqField,
        value: Option<Template>,
    },
    /// `uac_req_send()`: send the request the `$uac_req` fields describe.
    UacReqSend,
    /// `$var(name) = value` / `$avp(name) = value` (`$null`: delete).
    SetVariable {
        scope: VarScope,
        name: String,
        value: Option<Template>,
    },
    /// `uac_reg_lookup_uri(uri, dst)`: the l_uuid of the record whose l_username is the
    /// URI's user goes into script variable `dst`. No such record: skip the rest.
    RegLookupUri {
        uri: Template,
        dst: (VarScope, String),
    },
    /// `uac_reg_request_to(user, mode)`: `$ru` and `$du` of the record's remote side, and its
    /// credentials into the `$avp`s that `auth_username_avp`, `auth_password_avp` and
    /// `auth_realm_avp` name, for a later `uac_auth()`. Mode bit 1: match l_username, not
    /// l_uuid; bit 2: the HA1, not the password. No such record: skip the rest.
    RegRequestTo { user: Template, mode: Template },
    /// `uac_reg_lookup(uuid, dst)`: `dst` (`$ru` or `$du`) becomes the local AoR
    /// `sip:l_username@l_domain` of record `uuid`. No such record: the rest of the rule's
    /// `do` list is skipped (Kamailio's false).
    RegLookup { uuid: Template, dst: UriTarget },
    /// `uac_reg_status(uuid)`: true when registered (1); otherwise the rest of the `do`
    /// list is skipped (−1 not found, −2 in progress, −3 disabled, −99 waiting).
    RegStatus(Template),
    /// `uac_reg_enable(attr, value)` / `uac_reg_disable(attr, value)`: every record whose
    /// `attr` (l_uuid, l_username, r_username, auth_username) is `value`; none: skip the rest.
    RegSetEnabled {
        attr: LookupKey,
        value: Template,
        enabled: bool,
    },
    /// `uac_reg_refresh(uuid)`: re-read the table (unchanged rows keep their state); the
    /// record gone afterwards: skip the rest.
    RegRefresh(Template),
    /// `drop()`.
    Drop,
    /// `exit`: stop the rules of this hook.
    Exit,
}

/// The mode flags of `uac_auth`: bit 1 (value 1) means the passwords are HA1 in hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    Fixed(u32),
    /// `uac_auth_mode(vmode)`: read per call.
    Template(Template),
}

/// Where `uac_reg_lookup` writes its URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriTarget {
    /// `$ru`: the Request-URI.
    RequestUri,
    /// `$du`: the next hop.
    NextHop,
}

/// `uac_auth` mode flag: the password is HA1.
pub const AUTH_MODE_HA1: u32 = 1;

/// An argument as written: a string (a template) or an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Str(String),
    Int(i64),
}

/// One registered function.
pub struct Function {
    pub name: &'static str,
    /// Accepted argument counts.
    pub arities: &'static [usize],
    /// Hooks it may be called from.
    pub hooks: &'static [Hook],
    /// Builds the action from arguments whose count is one of `arities`.
    pub build: fn(&[Arg]) -> Result<Action, RuleErrorKind>,
}

const ALL: &[Hook] = &[Hook::Request, Hook::Reply, Hook::Failure];
const REQUEST: &[Hook] = &[Hook::Request];
const REQUEST_FAILURE: &[Hook] = &[Hook::Request, Hook::Failure];
const FAILURE: &[Hook] = &[Hook::Failure];
/// Every hook, event rules included (Kamailio's ANY_ROUTE).
const ANY: &[Hook] = &[Hook::Request, Hook::Reply, Hook::Failure, Hook::Event];

/// Every function a rule may call. To add one: an [`Action`] variant, an entry here, and its
/// arm in `Uac::run_action` (the compiler asks for the arm).
pub const FUNCTIONS: &[Function] = &[
    Function {
        name: "uac_replace_from",
        arities: &[1, 2],
        hooks: REQUEST,
        build: |a| {
            let (display, uri) = display_uri(a)?;
            Ok(Action::ReplaceFrom { display, uri })
        },
    },
    Function {
        name: "uac_replace_to",
        arities: &[1, 2],
        hooks: REQUEST,
        build: |a| {
            let (display, uri) = display_uri(a)?;
            Ok(Action::ReplaceTo { display, uri })
        },
    },
    Function {
        name: "uac_restore_from",
        arities: &[0],
        hooks: REQUEST,
        build: |_| Ok(Action::RestoreFrom),
    },
    Function {
        name: "uac_restore_to",
        arities: &[0],
        hooks: REQUEST,
        build: |_| Ok(Action::RestoreTo),
    },
    Function {
        name: "append_hf",
        arities: &[1],
        hooks: ALL,
        build: |a| {
            let t = template(&a[0])?;
            let prefix = t.literal_prefix();
            let name_ok = prefix.split_once(':').is_some_and(|(n, _)| {
                !n.trim().is_empty()
                    && n.trim()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            });
            if !name_ok {
                return Err(RuleErrorKind::BadArgument(
                    "append_hf needs \"Name: value\" with the header name written out".into(),
                ));
            }
            Ok(Action::AppendHf(t))
        },
    },
    Function {
        name: "remove_hf",
        arities: &[1],
        hooks: ALL,
        build: |a| match &a[0] {
            Arg::Str(n) if !n.is_empty() && !n.contains('$') && !n.contains(':') => {
                Ok(Action::RemoveHf(n.clone()))
            }
            _ => Err(RuleErrorKind::BadArgument(
                "remove_hf needs a literal header name".into(),
            )),
        },
    },
    Function {
        name: "sl_send_reply",
        arities: &[2],
        hooks: REQUEST,
        build: |a| {
            let code = match &a[0] {
                Arg::Int(n) => *n,
                Arg::Str(s) => s.trim().parse().unwrap_or(0),
            };
            if !(100..=699).contains(&code) {
                return Err(RuleErrorKind::BadArgument(format!(
                    "sl_send_reply code {:?} is not a status code 100-699",
                    a[0]
                )));
            }
            Ok(Action::SlSendReply {
                code: code as u16,
                reason: template(&a[1])?,
            })
        },
    },
    Function {
        name: "t_relay",
        arities: &[0],
        hooks: REQUEST_FAILURE,
        build: |_| Ok(Action::TRelay),
    },
    Function {
        name: "uac_auth",
        arities: &[0, 1],
        hooks: FAILURE,
        build: |a| {
            match a {
            [] => Ok(Action::UacAuth(AuthMode::Fixed(0))),
            [Arg::Int(n)] if (0..=i64::from(u32::MAX)).contains(n) => {
                Ok(Action::UacAuth(AuthMode::Fixed(*n as u32)))
            }
            _ => Err(RuleErrorKind::BadArgument(
                "uac_auth(mode) needs an integer mode (1: the password is HA1); for a variable use uac_auth_mode".into(),
            )),
        }
        },
    },
    Function {
        name: "uac_auth_mode",
        arities: &[1],
        hooks: FAILURE,
        build: |a| Ok(Action::UacAuth(AuthMode::Template(template(&a[0])?))),
    },
    Function {
        name: "uac_req_send",
        arities: &[0],
        hooks: ANY,
        build: |_| Ok(Action::UacReqSend),
    },
    Function {
        name: "uac_reg_lookup",
        arities: &[2],
        hooks: REQUEST_FAILURE,
        build: |a| {
            let dst = match &a[1] {
                Arg::Str(s) if s == "$ru" => UriTarget::RequestUri,
                Arg::Str(s) if s == "$du" => UriTarget::NextHop,
                other => {
                    return Err(RuleErrorKind::BadArgument(format!(
                        "uac_reg_lookup destination {other:?} must be \"$ru\" or \"$du\""
                    )));
                }
            };
            Ok(Action::RegLookup {
                uuid: template(&a[0])?,
                dst,
            })
        },
    },
    Function {
        name: "uac_reg_lookup_uri",
        arities: &[2],
        hooks: ANY,
        build: |a| {
            let dst = match &a[1] {
                Arg::Str(s) => Template::parse(s)?
                    .single_variable()
                    .map(|(scope, name)| (scope, name.to_owned())),
                Arg::Int(_) => None,
            }
            .ok_or_else(|| {
                RuleErrorKind::BadArgument(format!(
                    "uac_reg_lookup_uri destination {:?} must be a $var(name) or $avp(name)",
                    a[1]
                ))
            })?;
            Ok(Action::RegLookupUri {
                uri: template(&a[0])?,
                dst,
            })
        },
    },
    Function {
        name: "uac_reg_request_to",
        arities: &[2],
        hooks: REQUEST_FAILURE,
        build: |a| {
            if let Arg::Int(n) = &a[1]
                && !(0..=3).contains(n)
            {
                return Err(RuleErrorKind::BadArgument(format!(
                    "uac_reg_request_to mode {n} is not 0-3 (bit 1: l_username, bit 2: HA1)"
                )));
            }
            Ok(Action::RegRequestTo {
                user: template(&a[0])?,
                mode: template(&a[1])?,
            })
        },
    },
    Function {
        name: "uac_reg_status",
        arities: &[1],
        hooks: ALL,
        build: |a| Ok(Action::RegStatus(template(&a[0])?)),
    },
    Function {
        name: "uac_reg_enable",
        arities: &[2],
        hooks: ALL,
        build: |a| set_enabled(a, true),
    },
    Function {
        name: "uac_reg_disable",
        arities: &[2],
        hooks: ALL,
        build: |a| set_enabled(a, false),
    },
    Function {
        name: "uac_reg_refresh",
        arities: &[1],
        hooks: ALL,
        build: |a| Ok(Action::RegRefresh(template(&a[0])?)),
    },
    Function {
        name: "drop",
        arities: &[0],
        hooks: ALL,
        build: |_| Ok(Action::Drop),
    },
    Function {
        name: "exit",
        arities: &[0],
        hooks: ANY,
        build: |_| Ok(Action::Exit),
    },
];

fn template(arg: &Arg) -> Result<Template, RuleErrorKind> {
    match arg {
        Arg::Str(s) => Template::parse(s),
        Arg::Int(n) => Template::parse(&n.to_string()),
    }
}

fn set_enabled(args: &[Arg], enabled: bool) -> Result<Action, RuleErrorKind> {
    let attr = match &args[0] {
        Arg::Str(name) => LookupKey::parse(name),
        Arg::Int(_) => None,
    }
    .ok_or_else(|| {
        RuleErrorKind::BadArgument(format!(
            "attribute {:?} is not l_uuid, l_username, r_username or auth_username",
            args[0]
        ))
    })?;
    Ok(Action::RegSetEnabled {
        attr,
        value: template(&args[1])?,
        enabled,
    })
}

fn display_uri(args: &[Arg]) -> Result<(Option<Template>, Template), RuleErrorKind> {
    match args {
        [uri] => Ok((None, template(uri)?)),
        [display, uri] => Ok((Some(template(display)?), template(uri)?)),
        _ => unreachable!("arity checked against the table"),
    }
}

/// Parses one `do` entry (`name(args)` or a bare `exit` / `drop`) for a hook.
pub fn parse(text: &str, hook: Hook) -> Result<Action, RuleErrorKind> {
    let tokens = tokenize(text)?;
    if let Some(Token::Pvar(..)) = tokens.first() {
        return assignment(&tokens);
    }
    let (name, rest) = match tokens.split_first() {
        Some((Token::Ident(name), rest)) => (name.clone(), rest),
        _ => return Err(RuleErrorKind::Syntax("expected a function call".into())),
    };
    let args = match rest {
        [] => Vec::new(),
        [Token::LParen, inner @ .., Token::RParen] => arguments(inner)?,
        _ => {
            return Err(RuleErrorKind::Syntax(
                "expected `name(arguments)`, one call per entry".into(),
            ));
        }
    };
    let function = FUNCTIONS
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| RuleErrorKind::UnknownFunction(name.clone()))?;
    if !function.arities.contains(&args.len()) {
        return Err(RuleErrorKind::ArgCount {
            function: name,
            expected: function
                .arities
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" or "),
            got: args.len(),
        });
    }
    if !function.hooks.contains(&hook) {
        return Err(RuleErrorKind::WrongHook {
            function: name,
            hook,
        });
    }
    (function.build)(&args)
}

/// `$uac_req(field) = value`, `$var(name) = value` or `$avp(name) = value`, in every hook.
/// A literal `$uac_req` value is checked here, a template when it runs.
fn assignment(tokens: &[Token]) -> Result<Action, RuleErrorKind> {
    let bad = |why: String| RuleErrorKind::BadAssignment(why);
    let (name, arg, value) = match tokens {
        [Token::Pvar(name, arg), Token::Assign, value] => (name, arg, value),
        _ => {
            return Err(RuleErrorKind::Syntax(
                "expected `$uac_req(field) = value` or a function call".into(),
            ));
        }
    };
    if let Some(scope) = VarScope::from_name(name) {
        let var = arg
            .as_deref()
            .filter(|a| valid_var_name(a))
            .ok_or_else(|| {
                RuleErrorKind::UnknownVariable(format!("${name}({})", arg.as_deref().unwrap_or("")))
            })?;
        return Ok(Action::SetVariable {
            scope,
            name: var.to_owned(),
            value: assigned_value(value)?,
        });
    }
    if name != "uac_req" {
        return Err(bad(format!(
            "only $uac_req(...), $var(...) and $avp(...) can be assigned, not ${name}"
        )));
    }
    let field = arg.as_deref().and_then(ReqField::parse).ok_or_else(|| {
        RuleErrorKind::UnknownVariable(format!("$uac_req({})", arg.as_deref().unwrap_or("")))
    })?;
    let value = assigned_value(value)?;
    // Literal values (and $null) are checked now, so a typo fails at configure.
    let literal = match &value {
        None => Some(None),
        Some(t) if t.is_literal() => Some(Some(t.literal_prefix())),
        Some(_) => None,
    };
    if let Some(literal) = literal {
        UacReq::default()
            .set(field, literal)
            .map_err(|e| bad(e.to_string()))?;
    } else if field.is_read_only() || field == ReqField::All {
        UacReq::default()
            .set(field, Some(""))
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(Action::SetUacReq { field, value })
}

/// The right-hand side of an assignment; `None` for `$null`.
fn assigned_value(value: &Token) -> Result<Option<Template>, RuleErrorKind> {
    Ok(match value {
        Token::Pvar(n, None) if n == "null" => None,
        Token::Str(s) => Some(Template::parse(s)?),
        Token::Int(n) => Some(Template::parse(&n.to_string())?),
        Token::Pvar(n, a) => Some(Template::parse(&match a {
            Some(a) => format!("${n}({a})"),
            None => format!("${n}"),
        })?),
        other => {
            return Err(RuleErrorKind::Syntax(format!(
                "expected a string, an integer, a variable or $null, found {other:?}"
            )));
        }
    })
}

fn arguments(tokens: &[Token]) -> Result<Vec<Arg>, RuleErrorKind> {
    let mut args = Vec::new();
    for (i, chunk) in tokens.split(|t| *t == Token::Comma).enumerate() {
        let arg = match chunk {
            [] if i == 0 && tokens.is_empty() => break,
            [Token::Str(s)] => Arg::Str(s.clone()),
            [Token::Int(n)] => Arg::Int(*n),
            [Token::Pvar(name, arg)] => Arg::Str(match arg {
                Some(a) => format!("${name}({a})"),
                None => format!("${name}"),
            }),
            _ => {
                return Err(RuleErrorKind::Syntax(format!(
                    "argument {} must be a string, an integer or a variable",
                    i + 1
                )));
            }
        };
        args.push(arg);
    }
    Ok(args)
}
