//! The uac.reg_* RPC methods (the WIT `handler.rpc` export), Kamailio's names, parameters
//! and field names; auth_password and auth_ha1 are never part of an answer.

use serde_json::{Map, Value, json};
use thiserror::Error;

use super::functions::{self, refresh, set_enabled};
use super::machine::{DueReason, Fresh, Outgoing, RegError, Registrar};
use super::store::{Account, Credentials, LookupKey, RecordId, RegistrationStore, StoreError};

/// Why an RPC call is refused (the WIT `rpc` error string).
#[derive(Debug, Error)]
pub enum RpcError {
    #[error("unknown method {0}")]
    UnknownMethod(String),
    #[error("{method}: {why}")]
    BadParams { method: &'static str, why: String },
    #[error("no record with {attr} = {value:?}")]
    NotFound { attr: String, value: String },
    #[error("uuid already exists")]
    UuidExists,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Reg(#[from] RegError),
}

/// The JSON result, and a REGISTER to send (uac.reg_register / uac.reg_unregister).
#[derive(Debug)]
pub struct RpcAnswer {
    pub result: Value,
    pub send: Option<Outgoing>,
}

/// Whether `method` is one of ours (the glue routes the rest to other modules).
pub fn is_reg_method(method: &str) -> bool {
    method.starts_with("uac.reg_")
}

/// Runs one uac.reg_* method; `params` is the JSON array of its positional parameters.
pub fn call(
    store: &mut dyn RegistrationStore,
    registrar: &mut Registrar,
    method: &str,
    params: &str,
    now_ms: u64,
    fresh: Fresh,
) -> Result<RpcAnswer, RpcError> {
    let name = method_name(method)?;
    let params = parse_params(name, params)?;
    let now = now_ms / 1000;
    let done = |result| Ok(RpcAnswer { result, send: None });
    match name {
        "uac.reg_dump" => {
            let mut records = Vec::new();
            let mut after = None;
            loop {
                let page = store.list(after, 1000);
                let Some(&last) = page.last() else { break };
                records.extend(page.iter().filter_map(|&id| record_json(store, id, now)));
                after = Some(last);
            }
            done(Value::Array(records))
        }
        "uac.reg_info" => {
            let [attr, value] = exact::<2>(name, &params)?;
            let key = lookup_key(name, attr)?;
            let id = first(store, key, attr, value)?;
            done(record_json(store, id, now).unwrap_or(Value::Null))
        }
        "uac.reg_enable" | "uac.reg_disable" => {
            let [attr, value] = exact::<2>(name, &params)?;
            let key = lookup_key(name, attr)?;
            let count = set_enabled(store, key, value, name == "uac.reg_enable", now_ms)?;
            if count == 0 {
                return Err(not_found(attr, value));
            }
            done(json!({ "count": count }))
        }
        "uac.reg_reload" => {
            let (added, changed, removed, unchanged) = store.reload()?;
            done(
                json!({ "added": added, "changed": changed, "removed": removed, "unchanged": unchanged }),
            )
        }
        "uac.reg_refresh" => {
            let [l_uuid] = exact::<1>(name, &params)?;
            if !refresh(store, l_uuid)? {
                return Err(not_found("l_uuid", l_uuid));
            }
            done(json!({ "l_uuid": l_uuid }))
        }
        "uac.reg_active" => {
            let [mode] = exact::<1>(name, &params)?;
            let active = match mode.as_str() {
                "0" => false,
                "1" => true,
                _ => return Err(bad(name, "the mode is 0 or 1")),
            };
            let omode = store.set_active(active);
            registrar.params.active = active;
            done(json!({ "omode": u8::from(omode), "nmode": u8::from(active) }))
        }
        "uac.reg_add" => {
            let (row, credentials) = row_from_params(&params)?;
            if store.get(&row.l_uuid).is_some() {
                return Err(RpcError::UuidExists);
            }
            let id = store.add(&row, &credentials, false)?;
            done(json!({ "l_uuid": row.l_uuid, "id": id }))
        }
        "uac.reg_remove" => {
            let [l_uuid] = exact::<1>(name, &params)?;
            let id = first(store, LookupKey::LUuid, "l_uuid", l_uuid)?;
            store.remove(id, false)?;
            done(json!({ "l_uuid": l_uuid }))
        }
        "uac.reg_register" | "uac.reg_unregister" => {
            let [l_uuid] = exact::<1>(name, &params)?;
            let id = first(store, LookupKey::LUuid, "l_uuid", l_uuid)?;
            let send = if name == "uac.reg_register" {
                registrar.on_due(store, id, DueReason::Requested, now, fresh)?
            } else {
                Some(registrar.unregister(store, id, now, fresh)?)
            };
            Ok(RpcAnswer {
                result: json!({ "l_uuid": l_uuid, "sent": send.is_some() }),
                send,
            })
        }
        _ => unreachable!("method_name admits only the methods above"),
    }
}

const METHODS: &[&str] = &[
    "uac.reg_dump",
    "uac.reg_info",
    "uac.reg_enable",
    "uac.reg_disable",
    "uac.reg_reload",
    "uac.reg_refresh",
    "uac.reg_active",
    "uac.reg_add",
    "uac.reg_remove",
    "uac.reg_register",
    "uac.reg_unregister",
];

fn method_name(method: &str) -> Result<&'static str, RpcError> {
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .ok_or_else(|| RpcError::UnknownMethod(method.to_owned()))
}

fn bad(method: &'static str, why: &str) -> RpcError {
    RpcError::BadParams {
        method,
        why: why.to_owned(),
    }
}

fn not_found(attr: &str, value: &str) -> RpcError {
    RpcError::NotFound {
        attr: attr.to_owned(),
        value: value.to_owned(),
    }
}

/// Parameters as strings (numbers written as JSON numbers are accepted too).
fn parse_params(method: &'static str, params: &str) -> Result<Vec<String>, RpcError> {
    if params.trim().is_empty() {
        return Ok(Vec::new());
    }
    let value: Value =
        serde_json::from_str(params).map_err(|e| bad(method, &format!("params: {e}")))?;
    let items = match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            other => Err(bad(
                method,
                &format!("parameter {other} is not a string or number"),
            )),
        })
        .collect()
}

fn exact<'a, const N: usize>(
    method: &'static str,
    params: &'a [String],
) -> Result<&'a [String; N], RpcError> {
    params.try_into().map_err(|_| {
        bad(
            method,
            &format!("takes {N} parameter(s), got {}", params.len()),
        )
    })
}

fn lookup_key(method: &'static str, attr: &str) -> Result<LookupKey, RpcError> {
    LookupKey::parse(attr).ok_or_else(|| {
        bad(
            method,
            "attr is l_uuid, l_username, r_username or auth_username",
        )
    })
}

fn first(
    store: &dyn RegistrationStore,
    key: LookupKey,
    attr: &str,
    value: &str,
) -> Result<RecordId, RpcError> {
    store
        .find(key, value)
        .first()
        .copied()
        .ok_or_else(|| not_found(attr, value))
}

/// Kamailio's record fields in its order, without auth_password and auth_ha1, plus what
/// siphost knows beyond them.
fn record_json(store: &dyn RegistrationStore, id: RecordId, now: u64) -> Option<Value> {
    let (a, s) = store.get_by_id(id)?;
    let expires = if s.expires > 0 { s.expires } else { a.expires };
    let mut m = Map::new();
    for (k, v) in [
        ("l_uuid", json!(a.l_uuid)),
        ("l_username", json!(a.l_username)),
        ("l_domain", json!(a.l_domain)),
        ("r_username", json!(a.r_username)),
        ("r_domain", json!(a.r_domain)),
        ("realm", json!(a.realm)),
        ("auth_username", json!(a.auth_username)),
        ("auth_proxy", json!(a.auth_proxy)),
        ("expires", json!(expires)),
        ("flags", json!(s.flags)),
        (
            "diff_expires",
            json!(s.registered_until as i64 - now as i64),
        ),
        ("timer_expires", json!(s.registered_until)),
        ("reg_delay", json!(a.reg_delay)),
        ("contact_addr", json!(a.contact_addr)),
        ("socket", json!(a.socket)),
        ("contact_user", json!(a.contact_user)),
        ("call_id", json!(s.call_id)),
        ("cseq", json!(s.cseq)),
        ("last_status", json!(s.last_status)),
        ("last_reason", json!(s.last_reason)),
        ("failures", json!(s.failures)),
        ("next_due_ms", json!(store.next_due(id))),
        ("status", json!(functions::status(store, &a.l_uuid, now))),
    ] {
        m.insert(k.to_owned(), v);
    }
    Some(Value::Object(m))
}

/// uac.reg_add parameters, Kamailio's order: l_uuid l_username l_domain r_username r_domain
/// realm auth_username auth_password auth_ha1 auth_proxy expires flags reg_delay socket
/// contact_addr; "." is empty.
fn row_from_params(params: &[String]) -> Result<(Account, Credentials), RpcError> {
    const NAME: &str = "uac.reg_add";
    let p: &[String; 15] = exact::<15>(NAME, params)?;
    let text = |i: usize| {
        if p[i] == "." {
            String::new()
        } else {
            p[i].clone()
        }
    };
    let number = |i: usize, field: &str| {
        text(i)
            .parse::<u32>()
            .map_err(|_| bad(NAME, &format!("{field} must be a number, got {:?}", p[i])))
    };
    for (i, field) in [
        (0, "l_uuid"),
        (1, "l_username"),
        (2, "l_domain"),
        (3, "r_username"),
        (4, "r_domain"),
        (6, "auth_username"),
        (9, "auth_proxy"),
    ] {
        if text(i).is_empty() {
            return Err(bad(NAME, &format!("{field} must not be empty")));
        }
    }
    let credentials = match (text(7), text(8)) {
        (_, ha1) if !ha1.is_empty() => {
            if !matches!(ha1.len(), 32 | 64) || !ha1.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(NAME, "auth_ha1 must be 32 or 64 hex digits"));
            }
            Credentials::Ha1(ha1.to_ascii_lowercase())
        }
        (password, _) if !password.is_empty() => Credentials::Password(password),
        _ => return Err(bad(NAME, "auth_password or auth_ha1 is needed")),
    };
    let row = Account {
        id: 0,
        l_uuid: text(0),
        l_username: text(1),
        l_domain: text(2),
        r_username: text(3),
        r_domain: text(4),
        realm: text(5),
        auth_username: text(6),
        auth_proxy: text(9),
        expires: number(10, "expires")?,
        row_flags: number(11, "flags")?,
        reg_delay: number(12, "reg_delay")?,
        socket: text(13),
        contact_addr: text(14),
        contact_user: String::new(),
    };
    Ok((row, credentials))
}

#[cfg(test)]
mod tests;
