//! `uac.req_send`: Kamailio's `$uac_req(...)` fields over the admin RPC, handed to a
//! tenant's uac filter (its `rpc` export), which sends the request as `uac_req_send()` does.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{Router, RpcError, param_index};
use crate::runtime::Runtime;

/// The method name, at the top level and in the filter's `rpc` export.
pub const METHOD: &str = "uac.req_send";

/// Adds `uac.req_send` to `router`.
pub fn register(router: &mut Router, runtime: Arc<Runtime>) {
    router.register(
        METHOD,
        "Sends a request from a tenant's uac filter, as uac_req_send() after setting $uac_req(...). \
         Params: tenant, then the fields as one object or as name=value strings \
         (method, ruri, furi, turi, ouri, hdrs, body, callid, sock, auser, apasswd, flags, \
         evroute, evparam, cseqno, fr_timeout, fr_inv_timeout, ftag, ttag); \
         named: {tenant, filter?, <fields>}. filter: the chain index of the uac filter (default 0).",
        move |params| {
            let call = ReqSendCall::from_params(params)?;
            let answer = runtime.filter_rpc(
                &call.tenant,
                METHOD,
                &Value::Object(call.fields).to_string(),
                call.filter,
            )?;
            Ok(serde_json::from_str(&answer).unwrap_or(Value::String(answer)))
        },
    );
}

/// The parameters of one `uac.req_send` call.
#[derive(Debug, Clone, PartialEq)]
struct ReqSendCall {
    tenant: String,
    filter: usize,
    fields: Map<String, Value>,
}

const USAGE: &str = "uac.req_send needs [tenant, {fields}] or [tenant, \"name=value\", …]";

impl ReqSendCall {
    fn from_params(params: &Value) -> Result<ReqSendCall, RpcError> {
        match params {
            Value::Array(items) => {
                let tenant = match items.first() {
                    Some(Value::String(t)) if !t.is_empty() => t.clone(),
                    _ => return Err(RpcError::invalid_params(USAGE)),
                };
                let mut fields = Map::new();
                for item in &items[1..] {
                    match item {
                        Value::Object(map) => fields.extend(map.clone()),
                        Value::String(pair) => {
                            let (name, value) = pair.split_once('=').ok_or_else(|| {
                                RpcError::invalid_params(format!(
                                    "{USAGE}: {pair:?} is not name=value"
                                ))
                            })?;
                            fields.insert(name.trim().to_owned(), Value::String(value.to_owned()));
                        }
                        _ => return Err(RpcError::invalid_params(USAGE)),
                    }
                }
                Ok(ReqSendCall {
                    tenant,
                    filter: 0,
                    fields,
                })
            }
            Value::Object(map) => {
                let tenant = match map.get("tenant") {
                    Some(Value::String(t)) if !t.is_empty() => t.clone(),
                    _ => return Err(RpcError::invalid_params(USAGE)),
                };
                let filter = param_index(params, 0, "filter")?.unwrap_or(0);
                let mut fields = map.clone();
                fields.remove("tenant");
                fields.remove("filter");
                Ok(ReqSendCall {
                    tenant,
                    filter,
                    fields,
                })
            }
            _ => Err(RpcError::invalid_params(USAGE)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn positional_named_and_pairs() {
        let want = ReqSendCall {
            tenant: "acme".into(),
            filter: 0,
            fields: json!({"method": "MESSAGE", "ruri": "sip:m@127.0.0.1"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        assert_eq!(
            ReqSendCall::from_params(
                &json!(["acme", {"method": "MESSAGE", "ruri": "sip:m@127.0.0.1"}])
            ),
            Ok(want.clone())
        );
        assert_eq!(
            ReqSendCall::from_params(&json!(["acme", "method=MESSAGE", "ruri=sip:m@127.0.0.1"])),
            Ok(want.clone())
        );
        let named = ReqSendCall::from_params(
            &json!({"tenant": "acme", "filter": 1, "method": "MESSAGE", "ruri": "sip:m@127.0.0.1"}),
        );
        assert_eq!(
            named,
            Ok(ReqSendCall {
                filter: 1,
                ..want.clone()
            })
        );
        for bad in [
            json!([]),
            json!([1]),
            json!(["acme", "noequals"]),
            json!({"method": "MESSAGE"}),
        ] {
            let err = ReqSendCall::from_params(&bad).expect_err("refused");
            assert_eq!(err.code, RpcError::INVALID_PARAMS, "{bad}");
        }
    }
}
