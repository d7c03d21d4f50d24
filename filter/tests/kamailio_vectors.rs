//! Every vector recorded from Kamailio 5.6 (vectors/kamailio-uac-replace.json), both ways:
//! the forwarded INVITE's Record-Route is encoded byte for byte, the reply is restored, and
//! the in-dialog BYE is restored as Kamailio does (call set up through Kamailio) and, with
//! the display name too, when the call was set up here.

mod common;

use common::{in_dialog, initial, lit, reply, request};
use serde_json::{Value, json};
use uac_filter::host::{SipMessage, Verdict};
use uac_filter::memory::{MemHost, MemMessage};
use uac_filter::uac::Uac;

const PROXY: &str = "<sip:127.0.0.1:5080;lr";

fn vectors() -> Vec<Value> {
    let text = include_str!("vectors/kamailio-uac-replace.json");
    let doc: Value = serde_json::from_str(text).expect("vector file is JSON");
    doc["vectors"].as_array().expect("vectors").clone()
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key}"))
}

fn tags(v: &Value) -> (String, String) {
    let rr = s(v, "record_route");
    let ftag = rr
        .split("ftag=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let ttag = s(v, "reply_upstream_to")
        .rsplit("tag=")
        .next()
        .unwrap()
        .to_owned();
    (ftag, ttag)
}

fn uac_for(v: &Value) -> Uac {
    let case = &v["case"];
    let mut actions = Vec::new();
    for (field, uri_key, display_key) in [
        ("from", "new_from", "new_from_display"),
        ("to", "new_to", "new_to_display"),
    ] {
        if let Some(uri) = case[uri_key].as_str() {
            actions.push(match case[display_key].as_str() {
                Some(d) => format!("uac_replace_{field}({}, {})", lit(d), lit(uri)),
                None => format!("uac_replace_{field}({})", lit(uri)),
            });
        }
    }
    let config = json!({
        "restore_mode": "auto",
        "restore_passwd": v["restore_passwd"],
        "rule": [{ "on": "request", "when": "is_method(\"INVITE\") && !has_totag()", "do": actions }],
    });
    Uac::configure(&config.to_string()).expect("vector config")
}

/// The INVITE through the filter: forwarded message and the Record-Route it asks for.
fn forward_invite(uac: &Uac, v: &Value, host: &mut MemHost) -> MemMessage {
    let case = &v["case"];
    let (ftag, _) = tags(v);
    let mut invite = request(
        "INVITE",
        s(case, "ruri"),
        &format!("{};tag={ftag}", s(case, "from")),
        s(case, "to"),
        &[],
    );
    invite.rr_params = Some(String::new());
    assert_eq!(
        uac.on_request(&initial("tx-invite"), &mut invite, host),
        Verdict::Continue
    );
    invite
}

#[test]
fn invite_record_route_and_headers_are_kamailios() {
    for (n, v) in vectors().iter().enumerate() {
        let uac = uac_for(v);
        let mut host = MemHost::default();
        let invite = forward_invite(&uac, v, &mut host);
        let rr = format!("{PROXY}{}>", invite.rr_params.as_deref().unwrap());
        assert_eq!(rr, s(v, "record_route"), "vector {n}");
        assert_eq!(
            invite.header("From").unwrap(),
            s(v, "forwarded_from"),
            "vector {n}"
        );
        assert_eq!(
            invite.header("To").unwrap(),
            s(v, "forwarded_to"),
            "vector {n}"
        );
    }
}

#[test]
fn reply_to_invite_gets_the_originals_back() {
    for (n, v) in vectors().iter().enumerate() {
        let uac = uac_for(v);
        let mut host = MemHost::default();
        forward_invite(&uac, v, &mut host);
        let (_, ttag) = tags(v);
        let mut ok = reply(
            200,
            "OK",
            "INVITE",
            s(v, "forwarded_from"),
            &format!("{};tag={ttag}", s(v, "forwarded_to")),
        );
        assert_eq!(
            uac.on_reply(&initial("tx-invite"), &mut ok, &mut host),
            Verdict::Continue
        );
        assert_eq!(
            ok.header("From").unwrap(),
            s(v, "reply_upstream_from"),
            "vector {n}"
        );
        assert_eq!(
            ok.header("To").unwrap(),
            s(v, "reply_upstream_to"),
            "vector {n}"
        );
    }
}

fn callee_bye(v: &Value) -> MemMessage {
    request(
        "BYE",
        "sip:alice@127.0.0.1:5070",
        s(v, "bye_downstream_from"),
        s(v, "bye_downstream_to"),
        &[("Route", s(v, "record_route"))],
    )
}

#[test]
fn callee_bye_restored_exactly_as_kamailio_when_set_up_there() {
    for (n, v) in vectors().iter().enumerate() {
        let uac = uac_for(v);
        // A fresh host: the INVITE went through Kamailio, only its Record-Route is known.
        let mut host = MemHost::default();
        let mut bye = callee_bye(v);
        let ctx = in_dialog("tx-bye", s(v, "record_route"));
        assert_eq!(uac.on_request(&ctx, &mut bye, &mut host), Verdict::Continue);
        assert_eq!(
            bye.header("From").unwrap(),
            s(v, "bye_upstream_from"),
            "vector {n}"
        );
        assert_eq!(
            bye.header("To").unwrap(),
            s(v, "bye_upstream_to"),
            "vector {n}"
        );
        assert!(host.counters.is_empty(), "vector {n}: {:?}", host.logs);
    }
}

#[test]
fn callee_bye_gets_display_back_too_and_its_reply_is_turned_back() {
    for (n, v) in vectors().iter().enumerate() {
        let uac = uac_for(v);
        let mut host = MemHost::default();
        forward_invite(&uac, v, &mut host);
        let mut bye = callee_bye(v);
        let ctx = in_dialog("tx-bye", s(v, "record_route"));
        uac.on_request(&ctx, &mut bye, &mut host);
        // Unlike Kamailio, the replaced display goes back as well: the caller sees exactly
        // the headers of its own dialog.
        assert_eq!(
            bye.header("From").unwrap(),
            s(v, "reply_upstream_to"),
            "vector {n}"
        );
        assert_eq!(
            bye.header("To").unwrap(),
            s(v, "reply_upstream_from"),
            "vector {n}"
        );
        let mut ok = reply(
            200,
            "OK",
            "BYE",
            &bye.header("From").unwrap(),
            &bye.header("To").unwrap(),
        );
        uac.on_reply(&ctx, &mut ok, &mut host);
        assert_eq!(
            ok.header("From").unwrap(),
            s(v, "bye_downstream_from"),
            "vector {n}"
        );
        assert_eq!(
            ok.header("To").unwrap(),
            s(v, "bye_downstream_to"),
            "vector {n}"
        );
    }
}

#[test]
fn caller_bye_goes_downstream_replaced() {
    for (n, v) in vectors().iter().enumerate() {
        let uac = uac_for(v);
        let mut host = MemHost::default();
        forward_invite(&uac, v, &mut host);
        let (_, ttag) = tags(v);
        let mut bye = request(
            "BYE",
            "sip:bob@127.0.0.1:5090",
            s(v, "reply_upstream_from"),
            s(v, "reply_upstream_to"),
            &[("Route", s(v, "record_route"))],
        );
        let ctx = in_dialog("tx-bye2", s(v, "record_route"));
        uac.on_request(&ctx, &mut bye, &mut host);
        assert_eq!(
            bye.header("From").unwrap(),
            s(v, "forwarded_from"),
            "vector {n}"
        );
        assert_eq!(
            bye.header("To").unwrap(),
            format!("{};tag={ttag}", s(v, "forwarded_to")),
            "vector {n}"
        );
    }
}
