//! The filter's `uac.req_send` RPC: the `$uac_req` fields as a JSON object, sent as
//! `uac_req_send()` sends them (the admin's top-level `uac.req_send` forwards here).

use serde_json::{Value, json};

use super::{ReqField, UacReq};
use crate::host::HostState;
use crate::uac::Uac;

/// The method name, as the admin forwards it.
pub const METHOD: &str = "uac.req_send";

/// Reads `{"method": "MESSAGE", "ruri": "sip:…", "cseqno": 5, …}` into fields; every key
/// must be a settable `$uac_req` field, every value a string, a number or null.
pub fn fields(params: &str) -> Result<UacReq, String> {
    let value: Value = serde_json::from_str(params)
        .map_err(|e| format!("{METHOD}: params must be a JSON object of $uac_req fields: {e}"))?;
    let Value::Object(map) = value else {
        return Err(format!(
            "{METHOD}: params must be a JSON object of $uac_req fields"
        ));
    };
    let mut req = UacReq::default();
    for (name, value) in &map {
        let field = ReqField::parse(name)
            .filter(|f| *f != ReqField::All)
            .ok_or_else(|| format!("{METHOD}: unknown field {name:?}"))?;
        let text = match value {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => return Err(format!("{METHOD}: {name} must be a string or a number")),
        };
        req.set(field, text.as_deref())
            .map_err(|e| format!("{METHOD}: {e}"))?;
    }
    Ok(req)
}

/// Sends the request; the answer names the request id the reply will come back with.
/// Secrets (apasswd) are never echoed.
pub fn req_send<H: HostState + ?Sized>(
    uac: &Uac,
    params: &str,
    host: &mut H,
) -> Result<String, String> {
    let req = fields(params)?;
    let id = uac.req_send(&req, host)?;
    Ok(json!({
        "request_id": id,
        "method": req.method,
        "ruri": req.ruri,
        "evroute": req.evroute,
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemHost;

    #[test]
    fn fields_are_read_and_checked() {
        let req =
            fields(r#"{"method":"MESSAGE","ruri":"sip:a@b","cseqno":7,"auser":null}"#).unwrap();
        assert_eq!(req.method, "MESSAGE");
        assert_eq!(req.cseqno, 7);
        assert!(
            fields(r#"{"nope":"x"}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(
            fields(r#"{"evcode":"200"}"#)
                .unwrap_err()
                .contains("set by the reply")
        );
        assert!(
            fields(r#"["MESSAGE"]"#)
                .unwrap_err()
                .contains("JSON object")
        );
        assert!(fields(r#"{"flags":"x"}"#).unwrap_err().contains("integer"));
    }

    #[test]
    fn sends_or_says_what_is_missing() {
        let uac = Uac::configure("{}").unwrap();
        let mut host = MemHost::default();
        let err = req_send(&uac, r#"{"method":"MESSAGE"}"#, &mut host).unwrap_err();
        assert_eq!(err, "uac_req_send: $uac_req(ruri) is required");
        assert!(host.sent.is_empty());
        let answer = req_send(
            &uac,
            r#"{"method":"MESSAGE","ruri":"sip:m@127.0.0.1","apasswd":"secret"}"#,
            &mut host,
        )
        .unwrap();
        assert!(!answer.contains("secret"), "{answer}");
        assert_eq!(host.sent.len(), 1);
        assert_eq!(host.sent[0].1.method, "MESSAGE");
    }
}
