//! The rule engine end to end over in-memory messages: configure-time checks, conditions,
//! variables, actions, and the restore modes (none, manual, auto, restore_dlg, secure).

mod common;

use common::{in_dialog, initial, reply, request};
use serde_json::json;
use uac_filter::host::{SipMessage, Verdict};
use uac_filter::memory::{MemHost, MemMessage};
use uac_filter::uac::{ACTION_FAILED, RESTORE_REFUSED, Uac};

fn uac(config: serde_json::Value) -> Uac {
    Uac::configure(&config.to_string()).expect("valid config")
}

fn config_error(config: serde_json::Value) -> String {
    Uac::configure(&config.to_string())
        .expect_err("config must be refused")
        .to_string()
}

fn rule(on: &str, when: Option<&str>, actions: &[&str]) -> serde_json::Value {
    match when {
        Some(w) => json!({"on": on, "when": w, "do": actions}),
        None => json!({"on": on, "do": actions}),
    }
}

fn invite() -> MemMessage {
    let mut m = request(
        "INVITE",
        "sip:bob@example.com:5070",
        "\"Alice\" <sip:alice@example.com>;tag=f1",
        "<sip:bob@example.com>",
        &[
            ("X-New-From", "sip:anon@anonymous.invalid"),
            ("X-New-From-Display", "\"Anon\""),
            ("User-Agent", "sipp"),
        ],
    );
    m.rr_params = Some(String::new());
    m.source = "127.0.0.2:5070".into();
    m
}

#[test]
fn configure_errors_name_the_rule_and_the_text() {
    let cases = [
        (
            rule("request", None, &["nope()"]),
            "rule 2 (\"nope()\"): unknown function nope",
        ),
        (
            rule("request", None, &["uac_replace_from(\"a\", \"b\", \"c\")"]),
            "uac_replace_from takes 1 or 2 arguments, got 3",
        ),
        (
            rule("request", Some("$xx == 1"), &["exit"]),
            "unknown variable $xx",
        ),
        (
            rule("request", Some("$hdr(A B) == 1"), &["exit"]),
            "unknown variable $hdr(A B)",
        ),
        (
            rule("request", Some("$rU =~ \"(\""), &["exit"]),
            "bad regex \"(\"",
        ),
        (rule("event", None, &["exit"]), "needs `event = \"name\"`"),
        (rule("eventx", None, &["exit"]), "unknown hook \"eventx\""),
        (
            rule("reply", None, &["sl_send_reply(403, \"no\")"]),
            "sl_send_reply cannot be used in a reply rule",
        ),
        (
            rule("request", Some("t_check_status(\"4..\")"), &["exit"]),
            "t_check_status cannot be used in a request rule",
        ),
        (
            rule("request", Some("is_method(\"INVITE\" &&"), &["exit"]),
            "syntax",
        ),
        (
            rule("request", None, &["sl_send_reply(99, \"x\")"]),
            "not a status code",
        ),
        (
            rule("request", None, &["append_hf(\"no colon\")"]),
            "append_hf needs",
        ),
        (rule("request", None, &[]), "empty `do` list"),
        (
            rule("request", None, &["uac_replace_from(\"$zz\")"]),
            "unknown variable $zz",
        ),
    ];
    for (r, want) in cases {
        let err = config_error(json!({"rule": [rule("request", None, &["exit"]), r]}));
        assert!(err.contains("rule 2"), "{err}");
        assert!(err.contains(want), "{err} should contain {want}");
    }
}

#[test]
fn configure_errors_name_the_key() {
    assert!(config_error(json!({"restore_mod": "auto"})).contains("unknown field `restore_mod`"));
    assert!(config_error(json!({"restore_mode": "always"})).contains("unknown variant `always`"));
    assert!(config_error(json!({"rr_from_store_param": "a b"})).contains("rr_from_store_param:"));
    assert!(config_error(json!({"rr_to_store_param": "vsf"})).contains("rr_to_store_param:"));
    assert!(config_error(json!({"restore_dlg": 2})).contains("restore_dlg:"));
    assert!(config_error(json!({"restore_secure": true})).contains("restore_secure_keys: no keys"));
    assert!(
        config_error(json!({"restore_secure_keys": ["1:00"]})).contains("restore_secure_keys:")
    );
}

#[test]
fn the_issue_example_rule_takes_display_and_uri_from_headers() {
    let u = uac(json!({
        "restore_mode": "auto",
        "restore_passwd": "secret",
        "rule": [rule("request",
            Some("is_method(\"INVITE\") && !has_totag() && $hdr(X-New-From) != $null"),
            &["uac_replace_from(\"$hdr(X-New-From-Display)\", \"$hdr(X-New-From)\")"])],
    }));
    let mut host = MemHost::default();
    let mut m = invite();
    assert_eq!(
        u.on_request(&initial("t"), &mut m, &mut host),
        Verdict::Continue
    );
    assert_eq!(
        m.header("From").unwrap(),
        "\"Anon\" <sip:anon@anonymous.invalid>;tag=f1"
    );
    assert!(m.rr_params.as_deref().unwrap().starts_with(";ftag=f1;vsf="));
    // Without the header the condition is false and nothing changes.
    let mut plain = invite();
    plain.remove_header("X-New-From");
    u.on_request(&initial("t2"), &mut plain, &mut host);
    assert_eq!(
        plain.header("From").unwrap(),
        "\"Alice\" <sip:alice@example.com>;tag=f1"
    );
    assert_eq!(plain.rr_params.as_deref(), Some(""));
}

#[test]
fn conditions_and_variables() {
    let when_adds = |when: &str| {
        let u =
            uac(json!({"rule": [rule("request", Some(when), &["append_hf(\"X-Hit: 1\\r\\n\")"])]}));
        let mut m = invite();
        u.on_request(&initial("t"), &mut m, &mut MemHost::default());
        m.header("X-Hit").is_some()
    };
    for (when, want) in [
        ("is_method(\"BYE|INVITE\")", true),
        ("is_method(\"invite\")", true),
        ("is_method(\"BYE\")", false),
        ("has_totag()", false),
        ("!has_totag() && ($rU == \"bob\" || $rU == \"x\")", true),
        ("$rp == 5070 && $rd == \"example.com\"", true),
        (
            "$fU == \"alice\" && $fd == \"example.com\" && $ft == \"f1\"",
            true,
        ),
        (
            "$fn == '\"Alice\"' && $fu == \"sip:alice@example.com\"",
            true,
        ),
        (
            "$tu == \"sip:bob@example.com\" && $tt == $null && $tn == $null",
            true,
        ),
        ("$ci == \"call-1\" && $cs == 1 && $rm == \"INVITE\"", true),
        (
            "$si == \"127.0.0.2\" && $sp == 5070 && $ua =~ \"^SIPP$\"",
            true,
        ),
        ("$ru =~ \"@example\\.org\"", false),
        ("$hdr(X-Missing)", false),
        ("$hdr(X-New-From)", true),
        ("$rs == $null && $rr == $null", true),
        ("!(is_method(\"INVITE\") && $rU == \"bob\")", false),
    ] {
        assert_eq!(when_adds(when), want, "{when}");
    }
}

#[test]
fn endpoint_reads_what_access_control_identified() {
    let u = uac(json!({"rule": [
        rule("request", Some("$endpoint == \"blocked\""), &["sl_send_reply(403, \"Not for $endpoint\")"]),
        rule("request", Some("$endpoint != $null"), &["append_hf(\"X-Endpoint: $endpoint\\r\\n\")"]),
    ]}));
    let mut host = MemHost::default();
    let mut m = invite();
    m.endpoint = Some("pbx".into());
    assert_eq!(
        u.on_request(&initial("t"), &mut m, &mut host),
        Verdict::Continue
    );
    assert_eq!(m.header("X-Endpoint").as_deref(), Some("pbx"));
    let mut m = invite();
    assert_eq!(
        u.on_request(&initial("t"), &mut m, &mut host),
        Verdict::Continue
    );
    assert_eq!(m.header("X-Endpoint"), None, "no endpoint: $null");
    let mut m = invite();
    m.endpoint = Some("blocked".into());
    assert_eq!(
        u.on_request(&initial("t"), &mut m, &mut host),
        Verdict::Reply {
            code: 403,
            reason: "Not for blocked".into()
        }
    );
}

#[test]
fn actions_headers_reply_drop_exit() {
    let u = uac(json!({"rule": [
        rule("request", Some("$rU == \"bob\""), &["append_hf(\"X-To-User: $tU@$td\\r\\n\")", "remove_hf(\"User-Agent\")"]),
        rule("request", Some("$hdr(X-Stop) != $null"), &["exit"]),
        rule("request", Some("$hdr(X-Drop) != $null"), &["drop()"]),
        rule("request", None, &["sl_send_reply(\"403\", \"Not $fU\")", "append_hf(\"X-Never: 1\")"]),
    ]}));
    let mut host = MemHost::default();
    let mut m = invite();
    assert_eq!(
        u.on_request(&initial("t"), &mut m, &mut host),
        Verdict::Reply {
            code: 403,
            reason: "Not alice".into()
        }
    );
    assert_eq!(m.header("X-To-User").unwrap(), "bob@example.com");
    assert_eq!(m.header("User-Agent"), None);
    assert_eq!(m.header("X-Never"), None);
    let mut m = invite();
    m.add_header("X-Drop", "1");
    assert_eq!(
        u.on_request(&initial("t"), &mut m, &mut host),
        Verdict::Drop
    );
    m.add_header("X-Stop", "1");
    assert_eq!(
        u.on_request(&initial("t"), &mut m, &mut host),
        Verdict::Continue
    );
}

#[test]
fn reply_and_failure_rules() {
    let u = uac(json!({"rule": [
        rule("reply", Some("$rs == 180 || $rr =~ \"ring\""), &["append_hf(\"X-Seen: $rs $rm\")"]),
        rule("failure", Some("t_check_status(\"^48[67]$\")"), &["append_hf(\"X-Retry: $rs\")", "t_relay()"]),
        rule("failure", None, &["drop()"]),
    ]}));
    let mut host = MemHost::default();
    let mut ringing = reply(
        180,
        "Ringing",
        "INVITE",
        "<sip:a@b>;tag=1",
        "<sip:c@d>;tag=2",
    );
    u.on_reply(&initial("t"), &mut ringing, &mut host);
    assert_eq!(ringing.header("X-Seen").unwrap(), "180 INVITE");
    let mut req = invite();
    let busy = reply(
        486,
        "Busy Here",
        "INVITE",
        "<sip:a@b>;tag=1",
        "<sip:c@d>;tag=2",
    );
    assert_eq!(
        u.on_failure(&initial("t"), &mut req, &busy, &mut host),
        Verdict::Resend
    );
    assert_eq!(req.header("X-Retry").unwrap(), "486");
    let declined = reply(
        603,
        "Decline",
        "INVITE",
        "<sip:a@b>;tag=1",
        "<sip:c@d>;tag=2",
    );
    assert_eq!(
        u.on_failure(&initial("t"), &mut invite(), &declined, &mut host),
        Verdict::Drop
    );
}

#[test]
fn a_header_is_replaced_at_most_once_and_auto_refuses_in_dialog() {
    let u = uac(json!({"rule": [rule("request", None,
        &["uac_replace_from(\"sip:one@x\")", "uac_replace_from(\"sip:two@x\")"])]}));
    let mut host = MemHost::default();
    let mut m = invite();
    u.on_request(&initial("t"), &mut m, &mut host);
    assert_eq!(m.header("From").unwrap(), "\"Alice\" <sip:one@x>;tag=f1");
    assert_eq!(host.counters.get(ACTION_FAILED), Some(&1));
    assert!(
        host.logs[0].1.contains("already replaced"),
        "{:?}",
        host.logs
    );
    assert_eq!(m.rr_params.as_deref().unwrap().matches(";vsf=").count(), 1);

    let mut host = MemHost::default();
    let mut m = invite();
    m.set_header("To", "<sip:bob@example.com>;tag=t9");
    u.on_request(&in_dialog("t", "<sip:p;lr>"), &mut m, &mut host);
    assert_eq!(
        m.header("From").unwrap(),
        "\"Alice\" <sip:alice@example.com>;tag=f1"
    );
    assert!(host.logs[0].1.contains("in-dialog"), "{:?}", host.logs);
}

fn replace_both(mode: serde_json::Value) -> Uac {
    let mut config = json!({"rule": [rule("request", Some("!has_totag()"), &[
        "uac_replace_from(\"\\\"Anon\\\"\", \"sip:anon@anonymous.invalid\")",
        "uac_replace_to(\"sip:+49301@trunk.example\")",
    ])]});
    for (k, v) in mode.as_object().unwrap() {
        config[k] = v.clone();
    }
    uac(config)
}

#[test]
fn mode_none_changes_without_bookkeeping() {
    let u = replace_both(json!({"restore_mode": "none"}));
    let mut host = MemHost::default();
    let mut m = invite();
    u.on_request(&initial("t"), &mut m, &mut host);
    assert_eq!(m.header("To").unwrap(), "<sip:+49301@trunk.example>");
    assert_eq!(m.rr_params.as_deref(), Some(""));
    assert!(host.transactions.is_empty() && host.dialogs.is_empty());
    let mut ok = reply(
        200,
        "OK",
        "INVITE",
        &m.header("From").unwrap(),
        "<sip:+49301@trunk.example>;tag=b",
    );
    u.on_reply(&initial("t"), &mut ok, &mut host);
    assert_eq!(
        ok.header("From").unwrap(),
        "\"Anon\" <sip:anon@anonymous.invalid>;tag=f1"
    );
}

/// The INVITE, its 200 and the callee's BYE through a configured filter.
fn call(u: &Uac, host: &mut MemHost) -> (MemMessage, MemMessage, String) {
    let mut m = invite();
    u.on_request(&initial("inv"), &mut m, host);
    let route = format!(
        "<sip:127.0.0.1:5060;lr{}>",
        m.rr_params.clone().unwrap_or_default()
    );
    let mut ok = reply(
        200,
        "OK",
        "INVITE",
        &m.header("From").unwrap(),
        &format!("{};tag=b1", m.header("To").unwrap()),
    );
    u.on_reply(&initial("inv"), &mut ok, host);
    let bye = request(
        "BYE",
        "sip:alice@127.0.0.1:5070",
        &format!("{};tag=b1", m.header("To").unwrap()),
        &m.header("From").unwrap(),
        &[],
    );
    (ok, bye, route)
}

#[test]
fn manual_mode_restores_in_dialog_only_when_a_rule_says_so() {
    let u = replace_both(json!({"restore_mode": "manual"}));
    let mut host = MemHost::default();
    let (ok, bye, route) = call(&u, &mut host);
    assert_eq!(
        ok.header("From").unwrap(),
        "\"Alice\" <sip:alice@example.com>;tag=f1"
    );
    assert_eq!(ok.header("To").unwrap(), "<sip:bob@example.com>;tag=b1");
    let mut untouched = bye.clone();
    u.on_request(&in_dialog("bye", &route), &mut untouched, &mut host);
    assert_eq!(untouched, bye);

    let restore = uac(json!({"restore_mode": "manual", "rule": [
        rule("request", Some("has_totag()"), &["uac_restore_from()", "uac_restore_to()"])]}));
    let mut restored = bye.clone();
    restore.on_request(&in_dialog("bye", &route), &mut restored, &mut host);
    assert_eq!(
        restored.header("To").unwrap(),
        "\"Alice\" <sip:alice@example.com>;tag=f1"
    );
    assert_eq!(
        restored.header("From").unwrap(),
        "<sip:bob@example.com>;tag=b1"
    );
    // Replies to in-dialog requests are not restored in manual mode.
    let mut bye_ok = reply(
        200,
        "OK",
        "BYE",
        &restored.header("From").unwrap(),
        &restored.header("To").unwrap(),
    );
    let before = bye_ok.clone();
    restore.on_reply(&in_dialog("bye", &route), &mut bye_ok, &mut host);
    assert_eq!(bye_ok, before);
}

#[test]
fn restore_dlg_keeps_everything_in_dialog_variables() {
    let u = replace_both(json!({"restore_dlg": 1}));
    let mut host = MemHost::default();
    let (ok, mut bye, route) = call(&u, &mut host);
    assert_eq!(route, "<sip:127.0.0.1:5060;lr>");
    assert_eq!(
        host.dialogs[&("call-1".into(), "_uac_funew".into())],
        "sip:anon@anonymous.invalid"
    );
    assert_eq!(
        ok.header("From").unwrap(),
        "\"Alice\" <sip:alice@example.com>;tag=f1"
    );
    u.on_request(&in_dialog("bye", &route), &mut bye, &mut host);
    assert_eq!(
        bye.header("To").unwrap(),
        "\"Alice\" <sip:alice@example.com>;tag=f1"
    );
    assert_eq!(bye.header("From").unwrap(), "<sip:bob@example.com>;tag=b1");
    // The caller's own BYE goes downstream replaced.
    let mut caller_bye = request(
        "BYE",
        "sip:bob@h",
        "\"Alice\" <sip:alice@example.com>;tag=f1",
        "<sip:bob@example.com>;tag=b1",
        &[],
    );
    u.on_request(&in_dialog("bye2", &route), &mut caller_bye, &mut host);
    assert_eq!(
        caller_bye.header("From").unwrap(),
        "\"Anon\" <sip:anon@anonymous.invalid>;tag=f1"
    );
    assert_eq!(
        caller_bye.header("To").unwrap(),
        "<sip:+49301@trunk.example>;tag=b1"
    );
}

const KEY1: &str = "1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KEY2: &str = "2:202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

#[test]
fn secure_mode_round_trip_refuses_tampering_and_rotates() {
    let u = replace_both(json!({"restore_secure": true, "restore_secure_keys": [KEY1]}));
    let mut host = MemHost::default();
    let (ok, bye, route) = call(&u, &mut host);
    assert_eq!(
        ok.header("From").unwrap(),
        "\"Alice\" <sip:alice@example.com>;tag=f1"
    );
    assert!(
        host.dialogs.is_empty(),
        "the secure form needs no dialog state"
    );
    let mut restored = bye.clone();
    u.on_request(&in_dialog("bye", &route), &mut restored, &mut host);
    assert_eq!(
        restored.header("To").unwrap(),
        "\"Alice\" <sip:alice@example.com>;tag=f1"
    );
    assert_eq!(
        restored.header("From").unwrap(),
        "<sip:bob@example.com>;tag=b1"
    );

    // After rotation (new key first, old still listed) the old dialog still restores.
    let rotated =
        replace_both(json!({"restore_secure": true, "restore_secure_keys": [KEY2, KEY1]}));
    let mut again = bye.clone();
    rotated.on_request(
        &in_dialog("bye", &route),
        &mut again,
        &mut MemHost::default(),
    );
    assert_eq!(again, restored);

    // One flipped character: refused, logged, counted, headers left as they were.
    let vsf = route
        .split(";vsf=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let mut flipped = vsf.to_owned().into_bytes();
    flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
    let tampered = route.replace(vsf, std::str::from_utf8(&flipped).unwrap());
    let mut host = MemHost::default();
    let mut kept = bye.clone();
    u.on_request(&in_dialog("bye", &tampered), &mut kept, &mut host);
    assert_eq!(kept.header("To"), bye.header("To"));
    assert_eq!(host.counters.get(RESTORE_REFUSED), Some(&1));
    assert!(host.logs[0].1.contains("does not open"), "{:?}", host.logs);

    // A key dropped from the list: a clean refusal too.
    let only_new = replace_both(json!({"restore_secure": true, "restore_secure_keys": [KEY2]}));
    let mut host = MemHost::default();
    only_new.on_request(&in_dialog("bye", &route), &mut bye.clone(), &mut host);
    assert_eq!(host.counters.get(RESTORE_REFUSED), Some(&2));
}

#[test]
fn mangled_kamailio_parameters_never_restore_garbage() {
    let u = replace_both(json!({}));
    for route in [
        "<sip:p;lr;ftag=f1;vsf=!!!!>",
        "<sip:p;lr;ftag=f1;vsf=AA-->",
        "<sip:p;lr;ftag=f1;vsf=>",
        "<sip:p;lr;ftag=f1;vst=////////////////////////////>",
    ] {
        let mut host = MemHost::default();
        let mut bye = request(
            "BYE",
            "sip:a@h",
            "<sip:bob@example.com>;tag=b1",
            "\"Anon\" <sip:anon@anonymous.invalid>;tag=f1",
            &[],
        );
        let before = bye.clone();
        assert_eq!(
            u.on_request(&in_dialog("bye", route), &mut bye, &mut host),
            Verdict::Continue
        );
        assert_eq!(bye, before, "{route}");
        assert_eq!(host.counters.get(RESTORE_REFUSED), Some(&1), "{route}");
    }
}

#[test]
fn rust_api_replace_from_and_to_keep_the_restore_bookkeeping() {
    let u = uac(json!({"restore_passwd": "pw"}));
    let mut host = MemHost::default();
    let mut m = invite();
    u.replace_from(&initial("api"), &mut m, &mut host, Some(""), "sip:x@y.z")
        .unwrap();
    u.replace_to(&initial("api"), &mut m, &mut host, None, "sip:t@y.z")
        .unwrap();
    assert_eq!(m.header("From").unwrap(), "<sip:x@y.z>;tag=f1");
    assert_eq!(m.header("To").unwrap(), "<sip:t@y.z>");
    let params = m.rr_params.clone().unwrap();
    assert!(
        params.starts_with(";ftag=f1;vsf=") && params.contains(";vst="),
        "{params}"
    );
    let mut ok = reply(
        200,
        "OK",
        "INVITE",
        "<sip:x@y.z>;tag=f1",
        "<sip:t@y.z>;tag=b",
    );
    u.on_reply(&initial("api"), &mut ok, &mut host);
    assert_eq!(
        ok.header("From").unwrap(),
        "\"Alice\" <sip:alice@example.com>;tag=f1"
    );
    assert_eq!(ok.header("To").unwrap(), "<sip:bob@example.com>;tag=b");
    assert!(
        u.replace_from(&initial("api"), &mut m, &mut host, None, "bad uri")
            .is_err()
    );
}

#[test]
fn a_configuration_needs_only_the_hooks_it_has_rules_for() {
    use uac_filter::uac::HookNeeds;
    assert_eq!(uac(json!({})).hook_needs(), HookNeeds::default());
    let auth = uac(json!({
        "credential": ["u:r:p"],
        "rule": [rule("failure", Some(r#"t_check_status("401|407")"#), &["uac_auth()", "t_relay()"])],
    }));
    assert_eq!(
        auth.hook_needs(),
        HookNeeds {
            failures: true,
            ..HookNeeds::default()
        }
    );
    let anonymize = uac(json!({
        "rule": [
            rule("request", Some(r#"is_method("INVITE") && !has_totag()"#), &[r#"uac_replace_from("", "sip:anonymous@anonymous.invalid")"#]),
            rule("reply", None, &[r#"append_hf("X-Seen: 1\r\n")"#]),
        ],
    }));
    assert_eq!(
        anonymize.hook_needs(),
        HookNeeds {
            initial_requests: true,
            in_dialog_requests: true,
            replies: true,
            failures: false,
        }
    );
}
