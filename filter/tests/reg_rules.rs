//! The uac_reg_* rule functions over an in-memory registration store: lookup into
//! `$ru`/`$du`, status as a test, enable/disable and refresh, and what a false result does.

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
