//! `uac_auth()` in the failure hook over the in-memory host: the answer on the resent
//! request, CSeq + 1 and the dialog's renumbering both ways, the retry bounds, the
//! per-call credentials and the configuration checks.

use md5::{Digest, Md5};
use serde_json::json;
use uac_filter::auth::{AUTH_ANSWERED, AUTH_FAILED};
use uac_filter::host::{Context, SipMessage, Verdict};
use uac_filter::memory::{MemHost, MemMessage};
use uac_filter::uac::Uac;

const CALLER: &str = "<sip:alice@caller.test>;tag=caller-tag";
const CALLEE: &str = "<sip:bob@trunk.test>;tag=callee-tag";

fn uac(extra: serde_json::Value) -> Uac {
    let mut config = json!({
        "credential": ["trunkuser:trunk.test:trunkpass"],
        "rule": [{"on": "failure", "when": "t_check_status(\"401|407\")",
                  "do": ["uac_auth()", "t_relay()"]}],
    });
    for (k, v) in extra.as_object().expect("object").iter() {
        config[k] = v.clone();
    }
    Uac::configure(&config.to_string()).expect("valid config")
}

fn msg(start: &str, from: &str, to: &str, cseq: &str, extra: &[(&str, &str)]) -> MemMessage {
    let mut text = format!(
        "{start}\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: call-1\r\nCSeq: {cseq}\r\n"
    );
    for (n, v) in extra {
        text.push_str(&format!("{n}: {v}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    MemMessage::parse(&text).expect("test message parses")
}

fn invite(extra: &[(&str, &str)]) -> MemMessage {
    msg(
        "INVITE sip:bob@trunk.test SIP/2.0",
        CALLER,
        "<sip:bob@trunk.test>",
        "1 INVITE",
        extra,
    )
}

fn challenge(code: u16, cseq: &str, lines: &[&str]) -> MemMessage {
    let (reason, header) = match code {
        401 => ("Unauthorized", "WWW-Authenticate"),
        _ => ("Proxy Authentication Required", "Proxy-Authenticate"),
    };
    let extra: Vec<(&str, &str)> = lines.iter().map(|l| (header, *l)).collect();
    msg(
        &format!("SIP/2.0 {code} {reason}"),
        CALLER,
        "<sip:bob@trunk.test>;tag=edge",
        cseq,
        &extra,
    )
}

fn ctx(in_dialog: bool, tx: &str) -> Context {
    Context {
        in_dialog,
        dialog_key: Some("call-1".into()),
        transaction_key: tx.into(),
        own_route: None,
    }
}

const MD5_CHALLENGE: &str = r#"Digest realm="trunk.test", nonce="n1", qop="auth", opaque="op""#;

/// The parameters of a credentials line (quotes removed).
fn param(line: &str, name: &str) -> String {
    line.trim_start_matches("Digest")
        .split(',')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(n, _)| n.trim() == name)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a server computes for an MD5 qop=auth answer (RFC 2617 §3.2.2.1).
fn expected_md5(line: &str, method: &str, password: &str) -> String {
    let ha1 = md5_hex(&format!(
        "{}:{}:{password}",
        param(line, "username"),
        param(line, "realm")
    ));
    let ha2 = md5_hex(&format!("{method}:{}", param(line, "uri")));
    md5_hex(&format!(
        "{ha1}:{}:{}:{}:auth:{ha2}",
        param(line, "nonce"),
        param(line, "nc"),
        param(line, "cnonce")
    ))
}

/// INVITE sent, 407 back, failure hook: returns the resent request.
fn challenged_invite(uac: &Uac, host: &mut MemHost, extra: &[(&str, &str)]) -> MemMessage {
    let tx = ctx(false, "tx-invite");
    let mut request = invite(extra);
    assert_eq!(uac.on_request(&tx, &mut request, host), Verdict::Continue);
    let mut reply = challenge(407, "1 INVITE", &[MD5_CHALLENGE]);
    uac.on_reply(&tx, &mut reply, host);
    assert_eq!(reply.header("CSeq").as_deref(), Some("1 INVITE"));
    assert_eq!(
        uac.on_failure(&tx, &mut request, &reply, host),
        Verdict::Resend
    );
    request
}

#[test]
fn a_challenged_call_is_answered_and_renumbered_both_ways() {
    let uac = uac(json!({}));
    let mut host = MemHost::default();
    let resent = challenged_invite(&uac, &mut host, &[]);
    let lines = resent.headers("Proxy-Authorization");
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert_eq!(param(line, "username"), "trunkuser");
    assert_eq!(param(line, "realm"), "trunk.test");
    assert_eq!(param(line, "uri"), "sip:bob@trunk.test");
    assert_eq!(param(line, "nc"), "00000001");
    assert_eq!(param(line, "opaque"), "op");
    assert_eq!(
        param(line, "response"),
        expected_md5(line, "INVITE", "trunkpass")
    );
    assert_eq!(resent.header("CSeq").as_deref(), Some("2 INVITE"));
    assert_eq!(host.counters.get(AUTH_ANSWERED), Some(&1));

    // The replies to the resent INVITE go back with the caller's number.
    let tx = ctx(false, "tx-invite");
    for code in ["100 Trying", "200 OK"] {
        let mut reply = msg(&format!("SIP/2.0 {code}"), CALLER, CALLEE, "2 INVITE", &[]);
        assert_eq!(uac.on_reply(&tx, &mut reply, &mut host), Verdict::Continue);
        assert_eq!(reply.header("CSeq").as_deref(), Some("1 INVITE"), "{code}");
    }

    // The caller's ACK and BYE go out shifted; the BYE's reply comes back unshifted.
    let mut ack = msg("ACK sip:bob@10.0.0.2 SIP/2.0", CALLER, CALLEE, "1 ACK", &[]);
    uac.on_request(&ctx(true, "tx-ack"), &mut ack, &mut host);
    assert_eq!(ack.header("CSeq").as_deref(), Some("2 ACK"));
    let bye_tx = ctx(true, "tx-bye");
    let mut bye = msg("BYE sip:bob@10.0.0.2 SIP/2.0", CALLER, CALLEE, "2 BYE", &[]);
    uac.on_request(&bye_tx, &mut bye, &mut host);
    assert_eq!(bye.header("CSeq").as_deref(), Some("3 BYE"));
    let mut ok = msg("SIP/2.0 200 OK", CALLER, CALLEE, "3 BYE", &[]);
    uac.on_reply(&bye_tx, &mut ok, &mut host);
    assert_eq!(ok.header("CSeq").as_deref(), Some("2 BYE"));

    // The callee's own requests and their replies keep the callee's numbers.
    let callee_tx = ctx(true, "tx-callee-bye");
    let mut bye = msg(
        "BYE sip:alice@10.0.0.1 SIP/2.0",
        CALLEE,
        CALLER,
        "7 BYE",
        &[],
    );
    uac.on_request(&callee_tx, &mut bye, &mut host);
    assert_eq!(bye.header("CSeq").as_deref(), Some("7 BYE"));
    let mut ok = msg("SIP/2.0 200 OK", CALLEE, CALLER, "7 BYE", &[]);
    uac.on_reply(&callee_tx, &mut ok, &mut host);
    assert_eq!(ok.header("CSeq").as_deref(), Some("7 BYE"));
}

#[test]
fn a_wrong_password_passes_the_second_challenge_back() {
    let uac = uac(json!({"credential": ["trunkuser:trunk.test:wrong"]}));
    let mut host = MemHost::default();
    let mut resent = challenged_invite(&uac, &mut host, &[]);
    let before = resent.clone();
    let tx = ctx(false, "tx-invite");
    let mut again = challenge(
        407,
        "2 INVITE",
        &[r#"Digest realm="trunk.test", nonce="n2""#],
    );
    uac.on_reply(&tx, &mut again, &mut host);
    assert_eq!(
        again.header("CSeq").as_deref(),
        Some("1 INVITE"),
        "the 407 reaches the caller with its own CSeq"
    );
    assert_eq!(
        uac.on_failure(&tx, &mut resent, &again, &mut host),
        Verdict::Continue,
        "no resend: the failure goes back"
    );
    assert_eq!(resent, before, "the request is left as it was");
    assert_eq!(host.counters.get(AUTH_FAILED), Some(&1));
    assert!(
        host.logs
            .iter()
            .any(|(_, l)| l.contains("credentials refused")),
        "{:?}",
        host.logs
    );
}

#[test]
fn a_stale_nonce_is_answered_again_with_the_new_nonce_then_bounded() {
    let uac = uac(json!({}));
    let mut host = MemHost::default();
    let mut request = challenged_invite(&uac, &mut host, &[]);
    let tx = ctx(false, "tx-invite");
    let mut cseq = 2;
    for round in 0..3 {
        let nonce = format!("stale{round}");
        let stale = challenge(
            407,
            &format!("{cseq} INVITE"),
            &[&format!(
                r#"Digest realm="trunk.test", nonce="{nonce}", qop="auth", stale=true"#
            )],
        );
        let verdict = uac.on_failure(&tx, &mut request, &stale, &mut host);
        if round == 2 {
            assert_eq!(verdict, Verdict::Continue, "stale bounded after 2");
            break;
        }
        assert_eq!(verdict, Verdict::Resend);
        cseq += 1;
        let lines = request.headers("Proxy-Authorization");
        assert_eq!(lines.len(), 1, "the stale answer is replaced, not doubled");
        assert_eq!(param(&lines[0], "nonce"), nonce);
        assert_eq!(param(&lines[0], "nc"), "00000001");
        assert_eq!(
            request.header("CSeq").as_deref(),
            Some(format!("{cseq} INVITE").as_str())
        );
    }
}

#[test]
fn a_reused_nonce_counts_up_across_the_dialog() {
    let uac = uac(json!({}));
    let mut host = MemHost::default();
    challenged_invite(&uac, &mut host, &[]);
    // A re-INVITE of the caller (CSeq 2 → 3) challenged with the same nonce: nc 2, CSeq 4.
    let tx = ctx(true, "tx-reinvite");
    let mut reinvite = msg(
        "INVITE sip:bob@10.0.0.2 SIP/2.0",
        CALLER,
        CALLEE,
        "2 INVITE",
        &[],
    );
    uac.on_request(&tx, &mut reinvite, &mut host);
    assert_eq!(reinvite.header("CSeq").as_deref(), Some("3 INVITE"));
    let mut reply = challenge(407, "3 INVITE", &[MD5_CHALLENGE]);
    uac.on_reply(&tx, &mut reply, &mut host);
    assert_eq!(reply.header("CSeq").as_deref(), Some("2 INVITE"));
    assert_eq!(
        uac.on_failure(&tx, &mut reinvite, &reply, &mut host),
        Verdict::Resend
    );
    let line = &reinvite.headers("Proxy-Authorization")[0];
    assert_eq!(param(line, "nc"), "00000002");
    assert_eq!(reinvite.header("CSeq").as_deref(), Some("4 INVITE"));
    let mut ok = msg("SIP/2.0 200 OK", CALLER, CALLEE, "4 INVITE", &[]);
    uac.on_reply(&tx, &mut ok, &mut host);
    assert_eq!(ok.header("CSeq").as_deref(), Some("2 INVITE"));
    // From now on the shift is 2.
    let mut ack = msg("ACK sip:bob@10.0.0.2 SIP/2.0", CALLER, CALLEE, "2 ACK", &[]);
    uac.on_request(&ctx(true, "tx-ack2"), &mut ack, &mut host);
    assert_eq!(ack.header("CSeq").as_deref(), Some("4 ACK"));
}

#[test]
fn a_cancel_of_the_initial_invite_follows_the_live_branch() {
    let uac = uac(json!({}));
    let mut host = MemHost::default();
    challenged_invite(&uac, &mut host, &[]);
    let tx = ctx(false, "tx-cancel");
    let mut cancel = msg(
        "CANCEL sip:bob@trunk.test SIP/2.0",
        CALLER,
        "<sip:bob@trunk.test>",
        "1 CANCEL",
        &[],
    );
    uac.on_request(&tx, &mut cancel, &mut host);
    assert_eq!(cancel.header("CSeq").as_deref(), Some("2 CANCEL"));
    let mut ok = msg(
        "SIP/2.0 200 OK",
        CALLER,
        "<sip:bob@trunk.test>",
        "2 CANCEL",
        &[],
    );
    uac.on_reply(&tx, &mut ok, &mut host);
    assert_eq!(ok.header("CSeq").as_deref(), Some("1 CANCEL"));
}

#[test]
fn a_401_gets_authorization_and_every_realm_is_answered() {
    let uac = uac(json!({"credential": ["trunkuser:trunk.test:trunkpass", "u2:other.test:p2"]}));
    let mut host = MemHost::default();
    let tx = ctx(false, "tx");
    let mut request = invite(&[]);
    let reply = challenge(
        401,
        "1 INVITE",
        &[
            MD5_CHALLENGE,
            r#"Digest realm="other.test", nonce="m1", algorithm=SHA-256"#,
        ],
    );
    assert_eq!(
        uac.on_failure(&tx, &mut request, &reply, &mut host),
        Verdict::Resend
    );
    let lines = request.headers("Authorization");
    assert_eq!(lines.len(), 2);
    assert_eq!(param(&lines[0], "realm"), "trunk.test");
    assert_eq!(param(&lines[1], "realm"), "other.test");
    assert_eq!(param(&lines[1], "algorithm"), "SHA-256");
    assert!(request.headers("Proxy-Authorization").is_empty());
}

#[test]
fn ha1_mode_gives_the_same_answer_as_the_password() {
    let ha1 = md5_hex("trunkuser:trunk.test:trunkpass");
    for (config, mode_header) in [
        (
            json!({"credential": [format!("trunkuser:trunk.test:{ha1}")],
                   "rule": [{"on": "failure", "do": ["uac_auth(1)", "t_relay()"]}]}),
            None,
        ),
        (
            json!({"credential": [format!("trunkuser:trunk.test:{ha1}")],
                   "rule": [{"on": "failure", "do": ["uac_auth_mode($hdr(X-Auth-Mode))", "t_relay()"]}]}),
            Some("1"),
        ),
    ] {
        let uac = uac(config);
        let mut host = MemHost::default();
        let extra: Vec<(&str, &str)> = mode_header
            .map(|m| ("X-Auth-Mode", m))
            .into_iter()
            .collect();
        let resent = challenged_invite(&uac, &mut host, &extra);
        let line = &resent.headers("Proxy-Authorization")[0];
        assert_eq!(
            param(line, "response"),
            expected_md5(line, "INVITE", "trunkpass")
        );
    }
}

#[test]
fn per_call_credentials_from_templates_answer_any_realm() {
    let uac = uac(json!({
        "credential": [],
        "auth_username_avp": "$fU",
        "auth_password_avp": "$hdr(X-Secret)",
        "auth_realm_avp": "",
    }));
    let mut host = MemHost::default();
    let resent = challenged_invite(&uac, &mut host, &[("X-Secret", "alicepass")]);
    let line = &resent.headers("Proxy-Authorization")[0];
    assert_eq!(param(line, "username"), "alice");
    assert_eq!(param(line, "realm"), "trunk.test");
    assert_eq!(
        param(line, "response"),
        expected_md5(line, "INVITE", "alicepass")
    );
}

#[test]
fn no_credentials_for_the_realm_passes_the_failure_back() {
    let uac = uac(json!({"credential": ["u:elsewhere.test:p"]}));
    let mut host = MemHost::default();
    let tx = ctx(false, "tx");
    let mut request = invite(&[]);
    let reply = challenge(407, "1 INVITE", &[MD5_CHALLENGE]);
    assert_eq!(
        uac.on_failure(&tx, &mut request, &reply, &mut host),
        Verdict::Continue
    );
    assert_eq!(request.header("CSeq").as_deref(), Some("1 INVITE"));
    assert!(host.dialogs.is_empty(), "no shift recorded");
}

#[test]
fn the_shift_survives_a_filter_swap() {
    let mut host = MemHost::default();
    challenged_invite(&uac(json!({})), &mut host, &[]);
    // A fresh instance (hot swap) over the same host state.
    let swapped = uac(json!({}));
    let mut bye = msg("BYE sip:bob@10.0.0.2 SIP/2.0", CALLER, CALLEE, "2 BYE", &[]);
    swapped.on_request(&ctx(true, "tx-bye"), &mut bye, &mut host);
    assert_eq!(bye.header("CSeq").as_deref(), Some("3 BYE"));
}

#[test]
fn bad_auth_config_is_refused_naming_the_key() {
    let refused = |config: serde_json::Value| {
        Uac::configure(&config.to_string())
            .expect_err("refused")
            .to_string()
    };
    assert!(refused(json!({"credential": ["nocolons"]})).contains("credential[0]"));
    assert!(
        refused(json!({"auth_password_avp": "$hdr(X)"})).contains("auth_username_avp"),
        "password without username"
    );
    assert!(refused(json!({"auth_username_avp": "$fU"})).contains("auth_password_avp"));
    assert!(
        refused(json!({"auth_username_avp": "$nosuch", "auth_password_avp": "x"}))
            .contains("auth_username_avp")
    );
    assert!(
        refused(json!({"rule": [{"on": "request", "do": ["uac_auth()"]}]}))
            .contains("cannot be used in a request rule")
    );
    assert!(
        refused(json!({"rule": [{"on": "failure", "do": ["uac_auth(\"x\")"]}]}))
            .contains("integer mode")
    );
}
