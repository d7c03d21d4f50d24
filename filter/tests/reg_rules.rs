//! The uac_reg_* rule functions over an in-memory registration store: lookup into
//! `$ru`/`$du`, lookup_uri into a script variable, request_to with the credentials for a
//! later uac_auth(), status as a test, enable/disable and refresh, and what a false result
//! does.

use md5::{Digest, Md5};
use serde_json::json;
use uac_filter::host::{Context, SipMessage, Verdict};
use uac_filter::memory::{MemHost, MemMessage};
use uac_filter::reg::flags;
use uac_filter::reg::store::{Account, Credentials, MemoryStore, RegistrationStore};
use uac_filter::uac::Uac;

fn account(uuid: &str, user: &str) -> (Account, Credentials) {
    (
        Account {
            l_uuid: uuid.into(),
            l_username: user.into(),
            l_domain: "pbx.local".into(),
            r_username: format!("r-{uuid}"),
            r_domain: "provider.test".into(),
            auth_username: format!("a-{uuid}"),
            auth_proxy: "sip:127.0.0.1:5090".into(),
            expires: 600,
            ..Account::default()
        },
        Credentials::Password("secret".into()),
    )
}

fn host() -> MemHost {
    MemHost {
        registrations: Some(MemoryStore::with_rows(vec![
            account("u1", "alice"),
            account("u2", "bob"),
        ])),
        ..MemHost::default()
    }
}

fn uac(rules: serde_json::Value) -> Uac {
    Uac::configure(&json!({ "rule": rules }).to_string()).expect("valid config")
}

fn invite(ruri: &str) -> MemMessage {
    MemMessage::parse(&format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKx\r\n\
         From: <sip:caller@provider.test>;tag=a\r\nTo: <{ruri}>\r\nCall-ID: c1\r\n\
         CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ))
    .expect("parses")
}

fn ctx() -> Context {
    Context {
        in_dialog: false,
        dialog_key: Some("c1".into()),
        transaction_key: "t1".into(),
        own_route: None,
    }
}

#[test]
fn lookup_routes_a_call_back_to_the_local_user() {
    // The seed article: the provider calls sip:<l_uuid>@<reg_contact_addr>.
    let uac = uac(json!([{ "on": "request", "when": "is_method(\"INVITE\")",
        "do": ["uac_reg_lookup(\"$rU\", \"$ru\")", "sl_send_reply(299, \"found\")"] }]));
    let mut host = host();
    let mut msg = invite("sip:u2@127.0.0.1:5060");
    let verdict = uac.on_request(&ctx(), &mut msg, &mut host);
    assert_eq!(msg.request_uri().as_deref(), Some("sip:bob@pbx.local"));
    assert!(matches!(verdict, Verdict::Reply { code: 299, .. }));

    // Unknown l_uuid: R-URI untouched and the rest of the rule skipped.
    let mut msg = invite("sip:nobody@127.0.0.1:5060");
    let verdict = uac.on_request(&ctx(), &mut msg, &mut host);
    assert_eq!(
        msg.request_uri().as_deref(),
        Some("sip:nobody@127.0.0.1:5060")
    );
    assert_eq!(verdict, Verdict::Continue);
}

#[test]
fn lookup_into_du_sets_the_next_hop() {
    let uac = uac(json!([{ "on": "request", "do": ["uac_reg_lookup(\"u1\", \"$du\")"] }]));
    let mut host = host();
    let mut msg = invite("sip:x@127.0.0.1");
    uac.on_request(&ctx(), &mut msg, &mut host);
    assert_eq!(msg.next_hop.as_deref(), Some("sip:alice@pbx.local"));
}

#[test]
fn status_is_a_test_and_disable_enable_change_the_record() {
    let uac = uac(json!([
        { "on": "request", "when": "$rU == \"off\"", "do": ["uac_reg_disable(\"l_username\", \"alice\")"] },
        { "on": "request", "when": "$rU == \"on\"", "do": ["uac_reg_enable(\"l_uuid\", \"u1\")"] },
        { "on": "request", "when": "$rU == \"st\"",
          "do": ["uac_reg_status(\"u1\")", "sl_send_reply(200, \"registered\")"] },
    ]));
    let mut host = host();
    // Not registered yet: the reply is skipped.
    let verdict = uac.on_request(&ctx(), &mut invite("sip:st@h"), &mut host);
    assert_eq!(verdict, Verdict::Continue);
    let store = host.registrations.as_mut().expect("store");
    let (account, mut state) = store.get("u1").expect("u1");
    let id = account.id;
    state.flags = flags::ONLINE;
    state.registered_until = u64::MAX / 2;
    store.update_state(id, &state).expect("update");
    let verdict = uac.on_request(&ctx(), &mut invite("sip:st@h"), &mut host);
    assert!(matches!(verdict, Verdict::Reply { code: 200, .. }));

    uac.on_request(&ctx(), &mut invite("sip:off@h"), &mut host);
    let store = host.registrations.as_ref().expect("store");
    assert_ne!(store.get("u1").expect("u1").1.flags & flags::DISABLED, 0);
    uac.on_request(&ctx(), &mut invite("sip:on@h"), &mut host);
    let store = host.registrations.as_ref().expect("store");
    assert_eq!(store.get("u1").expect("u1").1.flags & flags::DISABLED, 0);
    assert!(
        store.next_due(id).is_some(),
        "enabling schedules the record"
    );
}

#[test]
fn refresh_rereads_the_table() {
    let uac = uac(json!([{ "on": "request",
        "do": ["uac_reg_refresh(\"u3\")", "sl_send_reply(200, \"u3 loaded\")"] }]));
    let mut host = host();
    let verdict = uac.on_request(&ctx(), &mut invite("sip:x@h"), &mut host);
    assert_eq!(verdict, Verdict::Continue, "u3 is not in the table yet");
    host.registrations
        .as_mut()
        .expect("store")
        .table_mut()
        .push(account("u3", "carol"));
    let verdict = uac.on_request(&ctx(), &mut invite("sip:x@h"), &mut host);
    assert!(matches!(verdict, Verdict::Reply { code: 200, .. }));
}

#[test]
fn bad_arguments_are_rejected_at_configure() {
    for (rule, why) in [
        (
            "uac_reg_lookup(\"$rU\", \"$fu\")",
            "must be \"$ru\" or \"$du\"",
        ),
        ("uac_reg_enable(\"socket\", \"x\")", "is not l_uuid"),
        ("uac_reg_status()", "takes 1 arguments"),
    ] {
        let err =
            Uac::configure(&json!({ "rule": [{ "on": "request", "do": [rule] }] }).to_string())
                .err()
                .unwrap_or_else(|| panic!("{rule} accepted"));
        assert!(err.to_string().contains(why), "{rule}: {err}");
    }
}

#[test]
fn without_a_store_registration_actions_are_false() {
    let uac = uac(json!([{ "on": "request",
        "do": ["uac_reg_lookup(\"u1\", \"$ru\")", "sl_send_reply(200, \"x\")"] }]));
    let mut host = MemHost::default();
    let mut msg = invite("sip:u1@h");
    assert_eq!(
        uac.on_request(&ctx(), &mut msg, &mut host),
        Verdict::Continue
    );
    assert_eq!(msg.request_uri().as_deref(), Some("sip:u1@h"));
}

fn reply(code: u16, lines: &[(&str, &str)]) -> MemMessage {
    let mut text = format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bKx\r\n\
         From: <sip:caller@provider.test>;tag=a\r\nTo: <sip:x@h>;tag=b\r\nCall-ID: c1\r\n\
         CSeq: 1 INVITE\r\n"
    );
    for (name, value) in lines {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    MemMessage::parse(&text).expect("parses")
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn script_variables_live_for_the_call_and_avps_for_the_transaction() {
    let uac = uac(json!([
        { "on": "request", "do": ["$var(v) = \"call-$rU\"", "$avp(a) = \"tx-$rU\"",
                                  "$var(v) = \"$var(v)!\""] },
        { "on": "request", "when": "$var(v) == \"call-bob!\"", "do": ["sl_send_reply(299, \"$var(v) $avp(a)\")"] },
        { "on": "failure", "when": "$var(v) == $null", "do": ["append_hf(\"X-Avp: $avp(a)\\r\\n\")"] },
    ]));
    let mut host = host();
    let verdict = uac.on_request(&ctx(), &mut invite("sip:bob@h"), &mut host);
    assert_eq!(
        verdict,
        Verdict::Reply {
            code: 299,
            reason: "call-bob! tx-bob".into()
        }
    );
    // The failure hook of the same transaction sees the $avp, and no $var.
    let mut request = invite("sip:bob@h");
    uac.on_failure(&ctx(), &mut request, &reply(486, &[]), &mut host);
    assert_eq!(request.header("X-Avp").as_deref(), Some("tx-bob"));
    // Another transaction does not.
    let other = Context {
        transaction_key: "t2".into(),
        ..ctx()
    };
    let mut request = invite("sip:bob@h");
    uac.on_failure(&other, &mut request, &reply(486, &[]), &mut host);
    assert_eq!(request.header("X-Avp").as_deref(), Some(""));
}

#[test]
fn lookup_uri_puts_the_l_uuid_of_the_uris_user_into_a_variable() {
    let uac = uac(json!([{ "on": "request",
        "do": ["uac_reg_lookup_uri(\"$ru\", \"$var(uuid)\")", "uac_reg_lookup(\"$var(uuid)\", \"$du\")",
               "sl_send_reply(299, \"$var(uuid)\")"] }]));
    let mut host = host();
    let mut msg = invite("sip:bob@127.0.0.1:5060");
    let verdict = uac.on_request(&ctx(), &mut msg, &mut host);
    assert_eq!(
        verdict,
        Verdict::Reply {
            code: 299,
            reason: "u2".into()
        }
    );
    assert_eq!(msg.next_hop.as_deref(), Some("sip:bob@pbx.local"));
    // No record for the user: the rest of the rule is skipped.
    let verdict = uac.on_request(&ctx(), &mut invite("sip:carol@h"), &mut host);
    assert_eq!(verdict, Verdict::Continue);
}

#[test]
fn request_to_targets_the_remote_user_and_uac_auth_answers_with_its_credentials() {
    let config = json!({
        "auth_username_avp": "$avp(auser)",
        "auth_password_avp": "$avp(apass)",
        "auth_realm_avp": "$avp(arealm)",
        "rule": [
            { "on": "request", "do": ["uac_reg_request_to(\"$rU\", 1)", "t_relay()"] },
            { "on": "failure", "when": "t_check_status(\"401\")", "do": ["uac_auth()", "t_relay()"] },
        ],
    });
    let uac = Uac::configure(&config.to_string()).expect("valid config");
    let mut host = host();
    let mut msg = invite("sip:alice@127.0.0.1:5060");
    assert_eq!(
        uac.on_request(&ctx(), &mut msg, &mut host),
        Verdict::Continue
    );
    assert_eq!(msg.request_uri().as_deref(), Some("sip:r-u1@provider.test"));
    assert_eq!(msg.next_hop.as_deref(), Some("sip:127.0.0.1:5090"));

    let challenge = r#"Digest realm="provider.test", nonce="n1", qop="auth""#;
    let verdict = uac.on_failure(
        &ctx(),
        &mut msg,
        &reply(401, &[("WWW-Authenticate", challenge)]),
        &mut host,
    );
    assert_eq!(verdict, Verdict::Resend);
    let line = msg.header("Authorization").expect("answered");
    let param = |name: &str| {
        line.trim_start_matches("Digest")
            .split(',')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    assert_eq!(param("username"), "a-u1");
    let ha1 = md5_hex("a-u1:provider.test:secret");
    let ha2 = md5_hex("INVITE:sip:r-u1@provider.test");
    let expected = md5_hex(&format!(
        "{ha1}:n1:{}:{}:auth:{ha2}",
        param("nc"),
        param("cnonce")
    ));
    assert_eq!(param("response"), expected);

    // Mode 0 matches l_uuid, not l_username: "alice" is no l_uuid, the rule stops there.
    let by_uuid = json!({
        "auth_username_avp": "$avp(auser)",
        "auth_password_avp": "$avp(apass)",
        "auth_realm_avp": "$avp(arealm)",
        "rule": [{ "on": "request", "do": ["uac_reg_request_to(\"$rU\", 0)", "sl_send_reply(299, \"x\")"] }],
    });
    let uac = Uac::configure(&by_uuid.to_string()).expect("valid config");
    let mut msg = invite("sip:alice@h");
    assert_eq!(
        uac.on_request(&ctx(), &mut msg, &mut host),
        Verdict::Continue
    );
    assert_eq!(msg.request_uri().as_deref(), Some("sip:alice@h"));
    let mut msg = invite("sip:u2@h");
    assert!(matches!(
        uac.on_request(&ctx(), &mut msg, &mut host),
        Verdict::Reply { code: 299, .. }
    ));
    assert_eq!(msg.request_uri().as_deref(), Some("sip:r-u2@provider.test"));
}

#[test]
fn the_new_functions_check_their_arguments_at_configure() {
    for (config, why) in [
        (
            json!({ "rule": [{ "on": "request", "do": ["uac_reg_lookup_uri(\"$ru\", \"$ru\")"] }] }),
            "must be a $var(name) or $avp(name)",
        ),
        (
            json!({ "rule": [{ "on": "request", "do": ["uac_reg_request_to(\"$rU\", 0)"] }] }),
            "auth_username_avp: uac_reg_request_to needs it set to one $avp(name)",
        ),
        (
            json!({ "auth_username_avp": "$avp(u)", "auth_password_avp": "$hdr(X-Pass)",
                    "auth_realm_avp": "$avp(r)",
                    "rule": [{ "on": "request", "do": ["uac_reg_request_to(\"$rU\", 0)"] }] }),
            "auth_password_avp: uac_reg_request_to needs it set to one $avp(name)",
        ),
        (
            json!({ "rule": [{ "on": "request", "do": ["uac_reg_request_to(\"$rU\", 7)"] }] }),
            "is not 0-3",
        ),
        (
            json!({ "rule": [{ "on": "request", "do": ["$var(1x) = \"a\""] }] }),
            "$var(1x)",
        ),
    ] {
        let err = Uac::configure(&config.to_string())
            .err()
            .unwrap_or_else(|| panic!("{config} accepted"));
        assert!(err.to_string().contains(why), "{config}: {err}");
    }
}
