//! Message builders shared by the filter's native tests.

// Each test binary that includes this module uses a different subset of it.
#![allow(dead_code)]

use uac_filter::host::Context;
use uac_filter::memory::MemMessage;

pub fn request(
    method: &str,
    ruri: &str,
    from: &str,
    to: &str,
    extra: &[(&str, &str)],
) -> MemMessage {
    let mut text = format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: call-1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
    );
    for (n, v) in extra {
        text.push_str(&format!("{n}: {v}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    MemMessage::parse(&text).expect("test request parses")
}

pub fn reply(code: u16, reason: &str, method: &str, from: &str, to: &str) -> MemMessage {
    let text = format!(
        "SIP/2.0 {code} {reason}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: call-1\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    );
    MemMessage::parse(&text).expect("test reply parses")
}

pub fn initial(tx: &str) -> Context {
    Context {
        in_dialog: false,
        dialog_key: Some("call-1".into()),
        transaction_key: tx.into(),
        own_route: None,
    }
}

pub fn in_dialog(tx: &str, route: &str) -> Context {
    Context {
        in_dialog: true,
        dialog_key: Some("call-1".into()),
        transaction_key: tx.into(),
        own_route: Some(route.into()),
    }
}

/// A rule argument as a Kamailio string literal.
pub fn lit(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
