//! The filter's configuration: Kamailio's uac modparam names plus the `rule` list, read from
//! the JSON the host hands to `configure`, checked whole before anything is used.

use serde::Deserialize;
use thiserror::Error;

use crate::digest::{Credential, CredentialError, parse_credentials};
use crate::reg::params::{RawRegParams, RegParams};
use crate::restore::{KeyError, SecureKeys};
use crate::rules::action::Action;
use crate::rules::pvar::{Template, VarScope};
use crate::rules::{RuleConfig, RuleError, RuleErrorKind, RuleSet};

/// Kamailio's `restore_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreMode {
    /// Replaced headers are never restored.
    None,
    /// Replies to the initial request are restored; in-dialog requests only by
    /// `uac_restore_from()` / `uac_restore_to()` in the rules.
    Manual,
    /// Replies, and in-dialog requests in both directions with their replies.
    #[default]
    Auto,
}

/// A Kamailio boolean modparam: `true`/`false` or `1`/`0`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Int(i64),
}

impl Default for Flag {
    fn default() -> Self {
        Flag::Bool(false)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    log_messages: bool,
    #[serde(default)]
    restore_mode: RestoreMode,
    #[serde(default = "default_from_param")]
    rr_from_store_param: String,
    #[serde(default = "default_to_param")]
    rr_to_store_param: String,
    #[serde(default)]
    restore_passwd: String,
    #[serde(default)]
    restore_from_avp: Option<String>,
    #[serde(default)]
    restore_to_avp: Option<String>,
    #[serde(default)]
    restore_dlg: Flag,
    #[serde(default)]
    restore_secure: bool,
    #[serde(default)]
    restore_secure_keys: Vec<String>,
    #[serde(default)]
    credential: Vec<String>,
    #[serde(default)]
    auth_username_avp: Option<String>,
    #[serde(default)]
    auth_password_avp: Option<String>,
    #[serde(default)]
    auth_realm_avp: Option<String>,
    #[serde(default)]
    rule: Vec<RuleConfig>,
    reg_contact_addr: Option<String>,
    reg_retry_interval: Option<i64>,
    reg_keep_callid: Option<i64>,
    reg_timer_interval: Option<i64>,
    reg_random_delay: Option<i64>,
    reg_active: Option<i64>,
    reg_gc_interval: Option<i64>,
    reg_max_per_second: Option<i64>,
    reg_retry_max_interval: Option<i64>,
    reg_refresh_min_percent: Option<i64>,
    reg_refresh_max_percent: Option<i64>,
    reg_reuse_nonce: Option<i64>,
    reg_reuse_nonce_max: Option<i64>,
    default_socket: Option<String>,
}

fn default_from_param() -> String {
    "vsf".into()
}

fn default_to_param() -> String {
    "vst".into()
}

/// A configuration the filter refuses, naming the key and why.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("uac filter config: {0}")]
    Json(#[from] serde_json::Error),
    #[error("uac filter config: {0}")]
    Rule(#[from] RuleError),
    #[error("uac filter config: restore_secure_keys: {0}")]
    Keys(#[from] KeyError),
    #[error("uac filter config: {0}")]
    Credential(#[from] CredentialError),
    #[error("uac filter config: {key}: {kind}")]
    Template {
        key: &'static str,
        kind: RuleErrorKind,
    },
    #[error("uac filter config: {key}: {why}")]
    Invalid { key: &'static str, why: String },
}

/// The checked options.
#[derive(Debug, Clone)]
pub struct Options {
    pub log_messages: bool,
    pub restore_mode: RestoreMode,
    pub rr_from_store_param: String,
    pub rr_to_store_param: String,
    pub restore_passwd: String,
    /// Transaction variable holding the original From for the replies.
    pub restore_from_var: String,
    /// Transaction variable holding the original To for the replies.
    pub restore_to_var: String,
    pub restore_dlg: bool,
    /// `restore_secure`: the AEAD keys, first one sealing.
    pub secure_keys: Option<SecureKeys>,
    /// `credential`: "user:realm:password" entries for `uac_auth()`.
    pub credentials: Vec<Credential>,
    /// `auth_username_avp` / `auth_password_avp` / `auth_realm_avp`.
    pub call_credentials: Option<CallCredentialTemplates>,
    /// The `$avp` names those three modparams are, when a rule calls `uac_reg_request_to`
    /// (which writes the credentials there): user, password, realm.
    pub request_to_avps: Option<[String; 3]>,
    pub rules: RuleSet,
    /// The remote registration modparams (`reg_*`, `default_socket`).
    pub registration: RegParams,
}

/// Per-call credentials as templates rendered over the challenged request (Kamailio's
/// auth_*_avp): an empty username falls back to the `credential` list, an empty realm
/// answers whatever realm challenges.
#[derive(Debug, Clone)]
pub struct CallCredentialTemplates {
    pub username: Template,
    pub password: Template,
    pub realm: Template,
}

impl Options {
    pub fn from_json(text: &str) -> Result<Options, ConfigError> {
        let text = if text.trim().is_empty() { "{}" } else { text };
        let raw: Raw = serde_json::from_str(text)?;
        let invalid = |key, why: &str| ConfigError::Invalid {
            key,
            why: why.to_owned(),
        };
        for (key, param) in [
            ("rr_from_store_param", &raw.rr_from_store_param),
            ("rr_to_store_param", &raw.rr_to_store_param),
        ] {
            if param.is_empty()
                || !param
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                || param.eq_ignore_ascii_case("ftag")
                || param.eq_ignore_ascii_case("lr")
            {
                return Err(invalid(
                    key,
                    "must be a URI parameter name (letters, digits, - _ .), not lr or ftag",
                ));
            }
        }
        if raw
            .rr_from_store_param
            .eq_ignore_ascii_case(&raw.rr_to_store_param)
        {
            return Err(invalid(
                "rr_to_store_param",
                "must differ from rr_from_store_param",
            ));
        }
        if raw.restore_passwd.bytes().any(|b| b == 0) {
            return Err(invalid("restore_passwd", "must not contain NUL"));
        }
        let restore_dlg = match raw.restore_dlg {
            Flag::Bool(b) => b,
            Flag::Int(0) => false,
            Flag::Int(1) => true,
            Flag::Int(_) => return Err(invalid("restore_dlg", "must be 0, 1, true or false")),
        };
        let var = |key, v: Option<String>, default: &str| match v {
            Some(v) if v.trim().is_empty() => Err(invalid(key, "must not be empty")),
            Some(v) => Ok(v.trim().trim_start_matches('$').to_owned()),
            None => Ok(default.to_owned()),
        };
        let restore_from_var = var("restore_from_avp", raw.restore_from_avp, "uac_orig_from")?;
        let restore_to_var = var("restore_to_avp", raw.restore_to_avp, "uac_orig_to")?;
        if restore_from_var == restore_to_var {
            return Err(invalid(
                "restore_to_avp",
                "must differ from restore_from_avp",
            ));
        }
        let secure_keys = match (raw.restore_secure, raw.restore_secure_keys.is_empty()) {
            (true, _) => Some(SecureKeys::parse(&raw.restore_secure_keys)?),
            (false, true) => None,
            (false, false) => {
                return Err(invalid(
                    "restore_secure_keys",
                    "given but restore_secure is false",
                ));
            }
        };
        if secure_keys.is_some() && restore_dlg {
            return Err(invalid(
                "restore_secure",
                "has no effect with restore_dlg (nothing goes into the Record-Route)",
            ));
        }
        let credentials = parse_credentials(&raw.credential)?;
        let template = |key: &'static str, text: &str| {
            Template::parse(text).map_err(|kind| ConfigError::Template { key, kind })
        };
        let call_credentials = match (
            raw.auth_username_avp,
            raw.auth_password_avp,
            raw.auth_realm_avp,
        ) {
            (None, None, None) => None,
            (Some(user), Some(password), realm) => Some(CallCredentialTemplates {
                username: template("auth_username_avp", &user)?,
                password: template("auth_password_avp", &password)?,
                realm: template("auth_realm_avp", realm.as_deref().unwrap_or(""))?,
            }),
            (None, _, _) => {
                return Err(invalid(
                    "auth_username_avp",
                    "missing while auth_password_avp or auth_realm_avp is set",
                ));
            }
            (Some(_), None, _) => {
                return Err(invalid(
                    "auth_password_avp",
                    "missing while auth_username_avp is set",
                ));
            }
        };
        let registration = RegParams::from_raw(&RawRegParams {
            reg_contact_addr: raw.reg_contact_addr,
            reg_retry_interval: raw.reg_retry_interval,
            reg_keep_callid: raw.reg_keep_callid,
            reg_timer_interval: raw.reg_timer_interval,
            reg_random_delay: raw.reg_random_delay,
            reg_active: raw.reg_active,
            reg_gc_interval: raw.reg_gc_interval,
            default_socket: raw.default_socket,
            reg_max_per_second: raw.reg_max_per_second,
            reg_retry_max_interval: raw.reg_retry_max_interval,
            reg_refresh_min_percent: raw.reg_refresh_min_percent,
            reg_refresh_max_percent: raw.reg_refresh_max_percent,
            reg_reuse_nonce: raw.reg_reuse_nonce,
            reg_reuse_nonce_max: raw.reg_reuse_nonce_max,
        })
        .map_err(|(key, why)| ConfigError::Invalid { key, why })?;
        let mut rules = RuleSet::compile(&raw.rule)?;
        let request_to = rules
            .actions()
            .any(|a| matches!(a, Action::RegRequestTo { .. }));
        let request_to_avps = if request_to {
            Some(request_to_targets(call_credentials.as_ref())?.map(str::to_owned))
        } else {
            None
        };
        // uac_auth() reads the transaction's $avps when the credentials come from them.
        rules.uses_avps |= call_credentials.as_ref().is_some_and(|c| {
            [&c.username, &c.password, &c.realm]
                .iter()
                .any(|t| t.reads_avps())
        });
        Ok(Options {
            registration,
            log_messages: raw.log_messages,
            restore_mode: raw.restore_mode,
            rr_from_store_param: raw.rr_from_store_param,
            rr_to_store_param: raw.rr_to_store_param,
            restore_passwd: raw.restore_passwd,
            restore_from_var,
            restore_to_var,
            restore_dlg,
            secure_keys,
            credentials,
            call_credentials,
            request_to_avps,
            rules,
        })
    }
}

/// The `$avp` names `uac_reg_request_to` writes the credentials into: what
/// `auth_username_avp`, `auth_password_avp` and `auth_realm_avp` name (Kamailio: "must be
/// set to valid pv's").
fn request_to_targets(
    templates: Option<&CallCredentialTemplates>,
) -> Result<[&str; 3], ConfigError> {
    fn avp<'t>(key: &'static str, t: Option<&'t Template>) -> Result<&'t str, ConfigError> {
        match t.and_then(Template::single_variable) {
            Some((VarScope::Transaction, name)) => Ok(name),
            _ => Err(ConfigError::Invalid {
                key,
                why: "uac_reg_request_to needs it set to one $avp(name)".into(),
            }),
        }
    }
    Ok([
        avp("auth_username_avp", templates.map(|t| &t.username))?,
        avp("auth_password_avp", templates.map(|t| &t.password))?,
        avp("auth_realm_avp", templates.map(|t| &t.realm))?,
    ])
}
