//! The rule engine: ordered `[[rule]]` entries (`on`, `when`, `do`) in Kamailio's own
//! expression and function syntax, parsed and checked once at configure, run per message.
//!
//! - [`lex`]: tokens; [`expr`]: `when` conditions; [`pvar`]: `$rU`-style variables and
//!   string templates; [`action`]: the function table (`FUNCTIONS`) and [`action::Action`].
//! - Adding a function: a variant of [`action::Action`], an entry in [`action::FUNCTIONS`]
//!   (name, argument counts, hooks, builder), and its arm in `Uac::run_action`.
//! - Adding a hook: a variant of [`Hook`] and its name in [`Hook::parse`]; the rule set
//!   keeps one list per hook. `on = "event"` rules also name their event (`event = ...`).

pub mod action;
pub mod expr;
pub mod lex;
pub mod pvar;

use std::fmt;

use serde::Deserialize;
use thiserror::Error;

use action::Action;
use expr::Expr;

/// Where rules run: Kamailio's request_route, onreply_route, failure_route, and
/// event_route[name] (`on = "event"` with `event = "uac:reply"` and the like).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Request,
    Reply,
    Failure,
    Event,
}

impl Hook {
    pub fn parse(name: &str) -> Result<Hook, RuleErrorKind> {
        match name {
            "request" => Ok(Hook::Request),
            "reply" => Ok(Hook::Reply),
            "failure" => Ok(Hook::Failure),
            "event" => Ok(Hook::Event),
            other => Err(RuleErrorKind::UnknownHook(other.to_owned())),
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Hook::Request => "request",
            Hook::Reply => "reply",
            Hook::Failure => "failure",
            Hook::Event => "event",
        })
    }
}

/// A `[[rule]]` table as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub on: String,
    /// `on = "event"`: the event's name (`uac:reply`, `uac:reg-ok`, ...).
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub when: Option<String>,
    #[serde(rename = "do")]
    pub actions: Vec<String>,
}

/// What is wrong with a rule.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RuleErrorKind {
    #[error("syntax: {0}")]
    Syntax(String),
    #[error("unknown hook {0:?} (request, reply, failure or event)")]
    UnknownHook(String),
    #[error("on = \"event\" needs `event = \"name\"` (e.g. \"uac:reply\")")]
    NoEventName,
    #[error("`event` is only for on = \"event\" rules")]
    EventNameOutsideEvent,
    #[error("event name {0:?} must be non-empty, without spaces")]
    BadEventName(String),
    #[error("{0}")]
    BadAssignment(String),
    #[error("unknown function {0}")]
    UnknownFunction(String),
    #[error("{function} takes {expected} arguments, got {got}")]
    ArgCount {
        function: String,
        expected: String,
        got: usize,
    },
    #[error("{function} cannot be used in a {hook} rule")]
    WrongHook { function: String, hook: Hook },
    #[error("unknown variable {0}")]
    UnknownVariable(String),
    #[error("bad regex {0:?}: {1}")]
    BadRegex(String, String),
    #[error("{0}")]
    BadArgument(String),
    #[error("empty `do` list")]
    NoActions,
}

/// A rule error naming the rule (1-based, in config order) and the text at fault.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("rule {rule} ({text:?}): {kind}")]
pub struct RuleError {
    pub rule: usize,
    pub text: String,
    pub kind: RuleErrorKind,
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The event an `on = "event"` rule handles.
    pub event: Option<String>,
    pub when: Option<Expr>,
    pub actions: Vec<Action>,
}

/// The rules of every hook, in config order.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    pub request: Vec<Rule>,
    pub reply: Vec<Rule>,
    pub failure: Vec<Rule>,
    pub event: Vec<Rule>,
    /// Some rule reads or writes `$avp(...)`: only then are a transaction's variables
    /// fetched from the host in each hook call.
    pub uses_avps: bool,
}

impl RuleSet {
    pub fn compile(rules: &[RuleConfig]) -> Result<RuleSet, RuleError> {
        let mut set = RuleSet::default();
        for (n, raw) in rules.iter().enumerate() {
            let err = |text: &str, kind| RuleError {
                rule: n + 1,
                text: text.to_owned(),
                kind,
            };
            let hook = Hook::parse(&raw.on).map_err(|k| err(&raw.on, k))?;
            let event = match (hook, &raw.event) {
                (Hook::Event, Some(name)) => {
                    let name = name.trim();
                    if name.is_empty() || name.contains(char::is_whitespace) {
                        return Err(err(name, RuleErrorKind::BadEventName(name.to_owned())));
                    }
                    Some(name.to_owned())
                }
                (Hook::Event, None) => return Err(err(&raw.on, RuleErrorKind::NoEventName)),
                (_, Some(name)) => {
                    return Err(err(name, RuleErrorKind::EventNameOutsideEvent));
                }
                (_, None) => None,
            };
            let when = match &raw.when {
                Some(text) => {
                    let tokens = lex::tokenize(text).map_err(|k| err(text, k))?;
                    Some(expr::parse(&tokens, hook).map_err(|k| err(text, k))?)
                }
                None => None,
            };
            if raw.actions.is_empty() {
                return Err(err("do", RuleErrorKind::NoActions));
            }
            let actions = raw
                .actions
                .iter()
                .map(|text| action::parse(text, hook).map_err(|k| err(text, k)))
                .collect::<Result<Vec<_>, _>>()?;
            set.uses_avps |= raw
                .when
                .iter()
                .chain(&raw.actions)
                .any(|text| text.contains("$avp("))
                || actions
                    .iter()
                    .any(|a| matches!(a, Action::RegRequestTo { .. }));
            let rule = Rule {
                event,
                when,
                actions,
            };
            match hook {
                Hook::Request => set.request.push(rule),
                Hook::Reply => set.reply.push(rule),
                Hook::Failure => set.failure.push(rule),
                Hook::Event => set.event.push(rule),
            }
        }
        Ok(set)
    }

    pub fn for_hook(&self, hook: Hook) -> &[Rule] {
        match hook {
            Hook::Request => &self.request,
            Hook::Reply => &self.reply,
            Hook::Failure => &self.failure,
            Hook::Event => &self.event,
        }
    }

    /// Every action of every hook.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        [&self.request, &self.reply, &self.failure, &self.event]
            .into_iter()
            .flatten()
            .flat_map(|rule| &rule.actions)
    }

    /// Whether any rule handles event `name` (names compare case-insensitively).
    pub fn handles_event(&self, name: &str) -> bool {
        self.event.iter().any(|r| {
            r.event
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(name))
        })
    }
}
