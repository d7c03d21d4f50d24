//! uac_req_send over in-memory messages: `$uac_req(...)` assignments in the rules, the
//! request built from them, digest answers to its 401/407 (a second challenge too,
//! bounded), and the `uac:reply` / registration events the rules act on.

mod common;

use common::{initial, request};
use md5::{Digest, Md5};
use serde_json::json;
use uac_filter::host::{OutgoingRequest, SipMessage, Verdict};
use uac_filter::memory::{MemHost, MemMessage};
use uac_filter::req_send::{REQ_AUTH_ANSWERED, REQ_FAILED, REQ_SENT};
use uac_filter::uac::{ACTION_FAILED, Uac};

fn uac(config: serde_json::Value) -> Uac {
    Uac::configure(&config.to_string()).expect("valid config")
}

fn config_error(config: serde_json::Value) -> String {
    Uac::configure(&config.to_string())
        .expect_err("config must be refused")
        .to_string()
}

/// The seed article's rule: an INVITE to 112 goes on, and a MESSAGE goes to the monitor.
fn notify_rules(extra: &[&str]) -> serde_json::Value {
    let mut actions = vec![
        "$uac_req(method) = \"MESSAGE\"",
        "$uac_req(ruri) = \"sip:monitor@127.0.0.1:5099\"",
        "$uac_req(furi) = \"sip:alerts@siphost.test\"",
        "$uac_req(hdrs) = \"Content-Type: text/plain\\r\\nX-Caller: $fU\\r\\n\"",
        "$uac_req(body) = \"$fU called $rU\"",
        "$uac_req(evroute) = 1",
        "$uac_req(evparam) = \"emergency-$ci\"",
    ];
    actions.extend_from_slice(extra);
    actions.push("uac_req_send()");
    json!({"on": "request", "when": "is_method(\"INVITE\") && !has_totag() && $rU =~ \"^(112|911)$\"", "do": actions})
}

fn emergency_invite() -> MemMessage {
    request(
        "INVITE",
        "sip:112@127.0.0.1:5090",
        "<sip:alice@example.com>;tag=a1",
        "<sip:112@127.0.0.1>",
        &[],
    )
}

fn header<'a>(out: &'a OutgoingRequest, name: &str) -> Vec<&'a str> {
    out.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

fn reply_to(out: &OutgoingRequest, code: u16, reason: &str, extra: &[(&str, &str)]) -> MemMessage {
    let mut text = format!("SIP/2.0 {code} {reason}\r\n");
    for name in ["From", "Call-ID", "CSeq"] {
        text.push_str(&format!("{name}: {}\r\n", header(out, name)[0]));
    }
    text.push_str(&format!("To: {};tag=uas1\r\n", header(out, "To")[0]));
    for (n, v) in extra {
        text.push_str(&format!("{n}: {v}\r\n"));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    MemMessage::parse(&text).expect("reply parses")
}

/// The host's own 408: built from the request, without a To tag.
fn local_408(out: &OutgoingRequest) -> MemMessage {
    let mut text = "SIP/2.0 408 Request Timeout\r\n".to_owned();
    for name in ["From", "To", "Call-ID", "CSeq"] {
        text.push_str(&format!("{name}: {}\r\n", header(out, name)[0]));
    }
    text.push_str("Content-Length: 0\r\n\r\n");
    let mut reply = MemMessage::parse(&text).expect("reply parses");
    // The host's own replies come from nowhere.
    reply.source = String::new();
    reply
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    value.split([',', ' ']).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

#[test]
fn the_invite_goes_on_and_the_message_is_sent() {
    let u = uac(json!({"rule": [notify_rules(&[])]}));
    let mut host = MemHost::default();
    let mut invite = emergency_invite();
    assert_eq!(
        u.on_request(&initial("t1"), &mut invite, &mut host),
        Verdict::Continue
    );
    assert_eq!(host.sent.len(), 1);
    let (_, out) = &host.sent[0];
    assert_eq!(out.method, "MESSAGE");
    assert_eq!(out.request_uri, "sip:monitor@127.0.0.1:5099");
    assert!(header(out, "From")[0].starts_with("<sip:alerts@siphost.test>;tag="));
    assert_eq!(header(out, "To"), ["<sip:monitor@127.0.0.1:5099>"]);
    assert_eq!(header(out, "CSeq"), ["10 MESSAGE"]);
    assert_eq!(header(out, "X-Caller"), ["alice"]);
    assert_eq!(out.body, b"alice called 112");
    assert_eq!(host.counters.get(REQ_SENT), Some(&1));
    // Another number sends nothing.
    let mut other = request(
        "INVITE",
        "sip:bob@127.0.0.1:5090",
        "<sip:alice@example.com>;tag=a1",
        "<sip:bob@127.0.0.1>",
        &[],
    );
    u.on_request(&initial("t2"), &mut other, &mut host);
    assert_eq!(host.sent.len(), 1);
}

#[test]
fn missing_method_or_ruri_sends_nothing_and_says_why() {
    for (set, missing) in [
        (
            "$uac_req(ruri) = \"sip:m@127.0.0.1\"",
            "$uac_req(method) is required",
        ),
        (
            "$uac_req(method) = \"MESSAGE\"",
            "$uac_req(ruri) is required",
        ),
    ] {
        let u = uac(json!({"rule": [{"on": "request", "do": [set, "uac_req_send()"]}]}));
        let mut host = MemHost::default();
        u.on_request(&initial("t"), &mut emergency_invite(), &mut host);
        assert!(host.sent.is_empty());
        assert!(
            host.logs.iter().any(|(_, l)| l.contains(missing)),
            "{:?}",
            host.logs
        );
        assert_eq!(host.counters.get(REQ_FAILED), Some(&1));
        assert_eq!(host.counters.get(ACTION_FAILED), Some(&1));
    }
}

#[test]
fn fields_start_empty_in_every_hook_call_and_reset_with_all() {
    let u = uac(json!({"rule": [
        {"on": "request", "when": "$hdr(X-Set) != $null", "do": ["$uac_req(method) = \"OPTIONS\"", "$uac_req(ruri) = \"sip:a@127.0.0.1\""]},
        {"on": "request", "when": "$hdr(X-Reset) != $null", "do": ["$uac_req(all) = $null"]},
        {"on": "request", "do": ["uac_req_send()"]},
    ]}));
    let mut host = MemHost::default();
    let with = |h: &str| {
        request(
            "INVITE",
            "sip:x@y",
            "<sip:a@b>;tag=1",
            "<sip:x@y>",
            &[(h, "1")],
        )
    };
    u.on_request(&initial("t1"), &mut with("X-Set"), &mut host);
    assert_eq!(host.sent.len(), 1);
    // The next call starts empty: nothing to send.
    u.on_request(&initial("t2"), &mut with("X-Other"), &mut host);
    assert_eq!(host.sent.len(), 1);
    let mut both = with("X-Set");
    both.add_header("X-Reset", "1");
    u.on_request(&initial("t3"), &mut both, &mut host);
    assert_eq!(host.sent.len(), 1);
}

#[test]
fn configure_checks_assignments_and_event_rules() {
    let cases = [
        (
            json!({"on": "request", "do": ["$uac_req(evcode) = 200"]}),
            "set by the reply",
        ),
        (
            json!({"on": "request", "do": ["$uac_req(nope) = 1"]}),
            "unknown variable $uac_req(nope)",
        ),
        (
            json!({"on": "request", "do": ["$uac_req(cseqno) = \"ten\""]}),
            "not a non-negative integer",
        ),
        (
            json!({"on": "request", "do": ["$ru = \"sip:x\""]}),
            "only $uac_req(...), $var(...) and $avp(...) can be assigned, not $ru",
        ),
        (
            json!({"on": "request", "do": ["$uac_req(all) = \"x\""]}),
            "only be reset",
        ),
        (
            json!({"on": "request", "do": ["$uac_req(method) \"x\""]}),
            "expected `$uac_req(field) = value`",
        ),
        (json!({"on": "event", "do": ["exit"]}), "needs `event"),
        (
            json!({"on": "request", "event": "uac:reply", "do": ["exit"]}),
            "only for on = \"event\"",
        ),
        (
            json!({"on": "event", "event": "uac:reply", "do": ["append_hf(\"X: 1\")"]}),
            "append_hf cannot be used in a event rule",
        ),
    ];
    for (rule, want) in cases {
        let err = config_error(json!({"rule": [rule]}));
        assert!(err.contains("rule 1"), "{err}");
        assert!(err.contains(want), "{err} should contain {want}");
    }
}

fn auth_rule(user: &str, password: &str, flags: u32) -> serde_json::Value {
    json!({"on": "request", "do": [
        "$uac_req(method) = \"MESSAGE\"",
        "$uac_req(ruri) = \"sip:monitor@127.0.0.1:5099\"",
        format!("$uac_req(auser) = \"{user}\""),
        format!("$uac_req(apasswd) = \"{password}\""),
        format!("$uac_req(flags) = {flags}"),
        "$uac_req(evroute) = 1",
        "$uac_req(evparam) = \"p1\"",
        "uac_req_send()",
    ]})
}

fn reply_event_rule() -> serde_json::Value {
    // Each uac:reply is reported by a second request carrying what the rule saw.
    json!({"on": "event", "event": "uac:reply", "when": "$uac_req(method) == \"MESSAGE\"", "do": [
        "$uac_req(body) = \"evcode=$uac_req(evcode) evtype=$uac_req(evtype) evparam=$uac_req(evparam) rs=$rs\"",
        "$uac_req(method) = \"PUBLISH\"",
        "$uac_req(evroute) = 0",
        "$uac_req(auser) = $null",
        "uac_req_send()",
    ]})
}

fn reports(host: &MemHost) -> Vec<String> {
    host.sent
        .iter()
        .filter(|(_, r)| r.method == "PUBLISH")
        .map(|(_, r)| String::from_utf8_lossy(&r.body).into_owned())
        .collect()
}

#[test]
fn a_401_is_answered_with_auser_and_apasswd_and_every_reply_raises_the_event() {
    let u = uac(json!({"rule": [auth_rule("monitor", "monpass", 0), reply_event_rule()]}));
    let mut host = MemHost::default();
    u.on_request(&initial("t"), &mut emergency_invite(), &mut host);
    let (id, first) = host.sent[0].clone();
    let challenge = reply_to(
        &first,
        401,
        "Unauthorized",
        &[(
            "WWW-Authenticate",
            "Digest realm=\"monitor.test\", nonce=\"n1\"",
        )],
    );
    u.on_local_reply(id, &mut challenge.clone(), &mut host);
    let (id2, second) = host.sent[1].clone();
    assert_eq!(second.method, "MESSAGE");
    assert_eq!(header(&second, "Call-ID"), header(&first, "Call-ID"));
    assert_eq!(header(&second, "From"), header(&first, "From"));
    assert_eq!(header(&second, "CSeq"), ["11 MESSAGE"]);
    let auth = header(&second, "Authorization")[0];
    let expected = md5_hex(&format!(
        "{}:n1:{}",
        md5_hex("monitor:monitor.test:monpass"),
        md5_hex("MESSAGE:sip:monitor@127.0.0.1:5099")
    ));
    assert_eq!(param(auth, "username"), Some("monitor"));
    assert_eq!(param(auth, "response"), Some(expected.as_str()));
    assert_eq!(host.counters.get(REQ_AUTH_ANSWERED), Some(&1));
    // The 401 raised uac:reply, whose rule sent the report.
    assert_eq!(reports(&host), ["evcode=401 evtype=1 evparam=p1 rs=401"]);
    let ok = reply_to(&second, 200, "OK", &[]);
    u.on_local_reply(id2, &mut ok.clone(), &mut host);
    assert_eq!(
        reports(&host),
        [
            "evcode=401 evtype=1 evparam=p1 rs=401",
            "evcode=200 evtype=1 evparam=p1 rs=200"
        ]
    );
    // The reply is consumed: a duplicate finds no state and raises nothing.
    u.on_local_reply(id2, &mut ok.clone(), &mut host);
    assert_eq!(reports(&host).len(), 2);
    assert!(!host.logs.iter().any(|(_, l)| l.contains("monpass")));
}

#[test]
fn a_407_then_a_401_ends_with_both_answers_and_a_refusal_stops() {
    let u = uac(json!({"rule": [auth_rule("monitor", "monpass", 0)]}));
    let mut host = MemHost::default();
    u.on_request(&initial("t"), &mut emergency_invite(), &mut host);
    let (id, first) = host.sent[0].clone();
    let proxy = reply_to(
        &first,
        407,
        "Proxy Authentication Required",
        &[(
            "Proxy-Authenticate",
            "Digest realm=\"edge.test\", nonce=\"p1\", qop=\"auth\"",
        )],
    );
    u.on_local_reply(id, &mut proxy.clone(), &mut host);
    let (id2, second) = host.sent[1].clone();
    assert_eq!(header(&second, "Proxy-Authorization").len(), 1);
    let www = reply_to(
        &second,
        401,
        "Unauthorized",
        &[(
            "WWW-Authenticate",
            "Digest realm=\"monitor.test\", nonce=\"w1\"",
        )],
    );
    u.on_local_reply(id2, &mut www.clone(), &mut host);
    let (id3, third) = host.sent[2].clone();
    assert_eq!(header(&third, "CSeq"), ["12 MESSAGE"]);
    let proxy_auth = header(&third, "Proxy-Authorization");
    assert_eq!(proxy_auth.len(), 1);
    // The proxy's nonce is used again with the next nonce count.
    assert_eq!(param(proxy_auth[0], "nc"), Some("00000002"));
    assert_eq!(header(&third, "Authorization").len(), 1);
    // The far end refuses the answer (a new challenge without stale): no loop.
    let again = reply_to(
        &third,
        401,
        "Unauthorized",
        &[(
            "WWW-Authenticate",
            "Digest realm=\"monitor.test\", nonce=\"w2\"",
        )],
    );
    u.on_local_reply(id3, &mut again.clone(), &mut host);
    assert_eq!(host.sent.len(), 3);
    assert!(
        host.logs
            .iter()
            .any(|(_, l)| l.contains("credentials refused")),
        "{:?}",
        host.logs
    );
}

#[test]
fn apasswd_as_ha1_with_flags_bit_0() {
    let ha1 = md5_hex("monitor:monitor.test:monpass");
    let u = uac(json!({"rule": [auth_rule("monitor", &ha1, 1)]}));
    let mut host = MemHost::default();
    u.on_request(&initial("t"), &mut emergency_invite(), &mut host);
    let (id, first) = host.sent[0].clone();
    let challenge = reply_to(
        &first,
        401,
        "Unauthorized",
        &[(
            "WWW-Authenticate",
            "Digest realm=\"monitor.test\", nonce=\"n1\"",
        )],
    );
    u.on_local_reply(id, &mut challenge.clone(), &mut host);
    let auth = header(&host.sent[1].1, "Authorization")[0].to_owned();
    let expected = md5_hex(&format!(
        "{ha1}:n1:{}",
        md5_hex("MESSAGE:sip:monitor@127.0.0.1:5099")
    ));
    assert_eq!(param(&auth, "response"), Some(expected.as_str()));
}

#[test]
fn a_local_timeout_is_evtype_2_and_no_evroute_raises_nothing() {
    let u =
        uac(json!({"rule": [notify_rules(&["$uac_req(fr_timeout) = 1500"]), reply_event_rule()]}));
    let mut host = MemHost::default();
    u.on_request(&initial("t"), &mut emergency_invite(), &mut host);
    let (id, first) = host.sent[0].clone();
    assert_eq!(first.timeout_ms, Some(1500));
    u.on_local_reply(id, &mut local_408(&first), &mut host);
    assert_eq!(
        reports(&host),
        ["evcode=408 evtype=2 evparam=emergency-call-1 rs=408"]
    );
    // A peer's own 408, even one without a To tag, is a reply (evtype 1).
    let mut peer = MemHost::default();
    u.on_request(&initial("t2"), &mut emergency_invite(), &mut peer);
    let (id, first) = peer.sent[0].clone();
    let mut untagged = local_408(&first);
    untagged.source = "127.0.0.1:5090".into();
    u.on_local_reply(id, &mut untagged, &mut peer);
    assert_eq!(
        reports(&peer),
        ["evcode=408 evtype=1 evparam=emergency-call-1 rs=408"]
    );
    // evroute 0: the reply is not even waited for.
    let quiet =
        uac(json!({"rule": [notify_rules(&["$uac_req(evroute) = 0"]), reply_event_rule()]}));
    let mut host = MemHost::default();
    quiet.on_request(&initial("t"), &mut emergency_invite(), &mut host);
    let (id, first) = host.sent[0].clone();
    assert!(host.transactions.is_empty());
    quiet.on_local_reply(id, &mut reply_to(&first, 200, "OK", &[]), &mut host);
    assert!(reports(&host).is_empty());
}

#[test]
fn raised_events_run_their_rules_with_event_variables() {
    let u = uac(json!({"rule": [
        {"on": "event", "event": "uac:reg-failed", "when": "$event(status) =~ \"^4\"", "do": [
            "$uac_req(method) = \"MESSAGE\"",
            "$uac_req(ruri) = \"sip:noc@127.0.0.1:5099\"",
            "$uac_req(body) = \"registration $event(l_uuid) failed: $event(status) $event(reason)\"",
            "uac_req_send()",
        ]},
        {"on": "event", "event": "uac:reg-ok", "do": ["exit"]},
    ]}));
    let mut host = MemHost::default();
    let vars = |status: &str| {
        vec![
            ("l_uuid".to_owned(), "acc-1".to_owned()),
            ("status".to_owned(), status.to_owned()),
            ("reason".to_owned(), "Forbidden".to_owned()),
        ]
    };
    u.raise_event("uac:reg-failed", &vars("403"), &mut host);
    u.raise_event("uac:reg-failed", &vars("503"), &mut host);
    u.raise_event("uac:reg-ok", &vars("200"), &mut host);
    u.raise_event("nobody:listens", &vars("403"), &mut host);
    assert_eq!(host.sent.len(), 1);
    assert_eq!(
        host.sent[0].1.body,
        b"registration acc-1 failed: 403 Forbidden"
    );
}
