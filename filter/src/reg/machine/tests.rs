use super::*;
use crate::digest::{Algorithm, DigestInput, Qop, Secret, compute_response};
use crate::reg::store::{MemoryStore, Report};

const NOW: u64 = 1_000_000;

fn account(l_uuid: &str) -> Account {
    Account {
        l_uuid: l_uuid.into(),
        l_username: format!("local-{l_uuid}"),
        l_domain: "local.test".into(),
        r_username: format!("remote-{l_uuid}"),
        r_domain: "provider.test".into(),
        realm: "provider.test".into(),
        auth_username: format!("auth-{l_uuid}"),
        auth_proxy: "sip:127.0.0.1:5090".into(),
        expires: 600,
        ..Account::default()
    }
}

fn store_with(rows: Vec<(Account, Credentials)>) -> MemoryStore {
    MemoryStore::with_rows(rows)
}

fn one(password: &str) -> (MemoryStore, RecordId) {
    let store = store_with(vec![(
        account("u1"),
        Credentials::Password(password.into()),
    )]);
    let id = store.find(crate::reg::store::LookupKey::LUuid, "u1")[0];
    (store, id)
}

fn params(keep_callid: bool, retry: u32) -> RegParams {
    RegParams {
        contact_addr: "127.0.0.1:5060".into(),
        retry_interval: retry,
        keep_callid,
        ..RegParams::default()
    }
}

fn fresh(n: u32) -> Fresh {
    Fresh {
        call_id: format!("call-{n}"),
        from_tag: format!("tag-{n}"),
        cnonce: format!("cnonce{n}"),
    }
}

fn reply(status: u16, headers: &[(&str, &str)]) -> Reply {
    Reply {
        status,
        reason: "R".into(),
        headers: headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn challenge(stale: bool) -> Reply {
    let stale = if stale { ", stale=true" } else { "" };
    reply(
        401,
        &[(
            "WWW-Authenticate",
            &format!(
                "Digest realm=\"provider.test\", nonce=\"n1\", qop=\"auth\", algorithm=MD5{stale}"
            ),
        )],
    )
}

fn ok(contact: &str, expires: Option<&str>) -> Reply {
    let mut headers = vec![("Contact", contact)];
    if let Some(e) = expires {
        headers.push(("Expires", e));
    }
    reply(200, &headers)
}

fn field<'a>(header: &'a str, name: &str) -> &'a str {
    let start = header.find(&format!("{name}=")).unwrap() + name.len() + 1;
    let rest = header[start..].trim_start_matches('"');
    let end = rest.find(['"', ',']).unwrap_or(rest.len());
    &rest[..end]
}

/// Due → REGISTER sent with request id `rid`.
fn due(
    reg: &mut Registrar,
    store: &mut MemoryStore,
    id: RecordId,
    rid: u64,
    now: u64,
    n: u32,
) -> Request {
    let out = reg
        .on_due(store, id, DueReason::Initial, now, fresh(n))
        .unwrap()
        .expect("a REGISTER");
    let request = out.request.clone();
    reg.sent(rid, out);
    request
}

fn resend(outcome: ReplyOutcome) -> Outgoing {
    match outcome {
        ReplyOutcome::Resend(o) => *o,
        other => panic!("expected a resend, got {other:?}"),
    }
}

#[test]
fn builds_the_register_from_the_record() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    let r = due(&mut reg, &mut store, id, 1, NOW, 1);
    assert_eq!(r.method, "REGISTER");
    assert_eq!(r.request_uri, "sip:provider.test");
    assert_eq!(
        r.header("From"),
        Some("<sip:remote-u1@provider.test>;tag=tag-1")
    );
    assert_eq!(r.header("To"), Some("<sip:remote-u1@provider.test>"));
    assert_eq!(r.header("Call-ID"), Some("call-1"));
    assert_eq!(r.header("CSeq"), Some("10 REGISTER"));
    assert_eq!(r.header("Contact"), Some("<sip:u1@127.0.0.1:5060>"));
    assert_eq!(r.header("Expires"), Some("600"));
    assert_eq!(r.next_hop.as_deref(), Some("sip:127.0.0.1:5090"));
    assert_eq!(r.socket, None);
    let (_, state) = store.get_by_id(id).unwrap();
    assert_eq!(state.flags & flags::ONGOING, flags::ONGOING);
}

#[test]
fn contact_user_socket_and_row_contact_addr() {
    let mut a = account("u1");
    a.contact_user = "alice".into();
    a.contact_addr = "10.0.0.1:5070".into();
    a.socket = "udp:10.0.0.1:5070".into();
    let mut store = store_with(vec![(a, Credentials::Password("pw".into()))]);
    let mut reg = Registrar::new(RegParams {
        default_socket: "udp:127.0.0.1:5060".into(),
        ..params(false, 30)
    });
    let r = due(&mut reg, &mut store, 1, 1, NOW, 1);
    assert_eq!(
        r.header("Contact"),
        Some("<sip:alice@10.0.0.1:5070;line=u1>")
    );
    assert_eq!(r.socket.as_deref(), Some("udp:10.0.0.1:5070"));

    let mut store = store_with(vec![(account("u2"), Credentials::Password("pw".into()))]);
    let r = due(&mut reg, &mut store, 1, 2, NOW, 2);
    assert_eq!(r.socket.as_deref(), Some("udp:127.0.0.1:5060"));
}

#[test]
fn whole_flow_challenge_then_registered_with_the_granted_expiry() {
    let (mut store, id) = one("secret");
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    let out = resend(
        reg.on_reply(&mut store, 1, &challenge(false), NOW, fresh(2))
            .unwrap(),
    );
    let r = &out.request;
    assert_eq!(r.header("Call-ID"), Some("call-1"));
    assert_eq!(r.header("CSeq"), Some("11 REGISTER"));
    assert_eq!(
        r.header("From"),
        Some("<sip:remote-u1@provider.test>;tag=tag-1")
    );
    let auth = r.header("Authorization").expect("Authorization");
    assert_eq!(field(auth, "username"), "auth-u1");
    assert_eq!(field(auth, "uri"), "sip:provider.test");
    let expected = compute_response(&DigestInput {
        algorithm: Algorithm::Md5,
        username: "auth-u1",
        realm: "provider.test",
        secret: Secret::Password("secret"),
        nonce: "n1",
        method: "REGISTER",
        uri: "sip:provider.test",
        qop: Some(Qop::Auth),
        nc: 1,
        cnonce: "cnonce2",
        body: &[],
    })
    .unwrap();
    assert_eq!(field(auth, "response"), expected);
    assert_eq!(
        store.get_by_id(id).unwrap().1.flags & flags::AUTHSENT,
        flags::AUTHSENT
    );
    reg.sent(2, out);

    let outcome = reg
        .on_reply(
            &mut store,
            2,
            &ok("<sip:u1@127.0.0.1:5060>;expires=300", Some("600")),
            NOW + 1,
            fresh(3),
        )
        .unwrap();
    assert!(matches!(
        outcome,
        ReplyOutcome::Registered { granted_secs: 300 }
    ));
    let (_, state) = store.get_by_id(id).unwrap();
    assert_eq!(
        state.flags & (flags::ONLINE | flags::ONGOING | flags::AUTHSENT),
        flags::ONLINE
    );
    assert_eq!(state.registered_until, NOW + 300);
    assert_eq!(
        store.last_report(id),
        Some(Report::Registered { granted_secs: 300 })
    );
    assert_eq!(reg.pending(), 0);
}

#[test]
fn ha1_credentials_answer_too() {
    let ha1 = crate::digest::response::ha1(&DigestInput {
        algorithm: Algorithm::Md5,
        username: "auth-u1",
        realm: "provider.test",
        secret: Secret::Password("secret"),
        nonce: "",
        method: "",
        uri: "",
        qop: None,
        nc: 0,
        cnonce: "",
        body: &[],
    })
    .unwrap();
    let mut store = store_with(vec![(account("u1"), Credentials::Ha1(ha1))]);
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, 1, 1, NOW, 1);
    let out = resend(
        reg.on_reply(&mut store, 1, &challenge(false), NOW, fresh(2))
            .unwrap(),
    );
    let expected = compute_response(&DigestInput {
        algorithm: Algorithm::Md5,
        username: "auth-u1",
        realm: "provider.test",
        secret: Secret::Password("secret"),
        nonce: "n1",
        method: "REGISTER",
        uri: "sip:provider.test",
        qop: Some(Qop::Auth),
        nc: 1,
        cnonce: "cnonce2",
        body: &[],
    })
    .unwrap();
    assert_eq!(
        field(out.request.header("Authorization").unwrap(), "response"),
        expected
    );
}

#[test]
fn expires_header_when_the_contact_has_no_param_and_our_contact_among_others() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    let reply = reply(
        200,
        &[
            (
                "Contact",
                "<sip:other@10.0.0.9>;expires=3600, \"U, one\" <sip:u1@elsewhere.test>",
            ),
            ("Contact", "<sip:u11@127.0.0.1:5060>;expires=50"),
            ("Expires", "120"),
        ],
    );
    let outcome = reg.on_reply(&mut store, 1, &reply, NOW, fresh(2)).unwrap();
    assert!(matches!(
        outcome,
        ReplyOutcome::Registered { granted_secs: 120 }
    ));
}

#[test]
fn line_parameter_matches_and_compact_contact() {
    let mut a = account("u1");
    a.contact_user = "alice".into();
    let mut store = store_with(vec![(a, Credentials::Password("pw".into()))]);
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, 1, 1, NOW, 1);
    let reply = reply(
        200,
        &[(
            "m",
            "<sip:alice@127.0.0.1:5060;line=u2>;expires=10, <sip:alice@127.0.0.1:5060;line=u1>;expires=90",
        )],
    );
    let outcome = reg.on_reply(&mut store, 1, &reply, NOW, fresh(2)).unwrap();
    assert!(matches!(
        outcome,
        ReplyOutcome::Registered { granted_secs: 90 }
    ));
}

#[test]
fn a_200_without_our_contact_is_a_failure() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    let outcome = reg
        .on_reply(
            &mut store,
            1,
            &ok("<sip:someone@127.0.0.1>;expires=60", None),
            NOW,
            fresh(2),
        )
        .unwrap();
    assert!(matches!(outcome, ReplyOutcome::Failed { status: 200, .. }));
    let (_, state) = store.get_by_id(id).unwrap();
    assert_eq!(state.flags & flags::ONLINE, 0);
    assert_eq!(store.last_report(id), Some(Report::Failed));
}

#[test]
fn contact_star_means_unregistered() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    let outcome = reg
        .on_reply(&mut store, 1, &ok("*", None), NOW, fresh(2))
        .unwrap();
    assert!(matches!(outcome, ReplyOutcome::Unregistered));
    assert_eq!(store.get_by_id(id).unwrap().1.flags & flags::ONLINE, 0);
    assert_eq!(store.next_due(id), None);
}

/// The registrar's 200 (our contact, 600 s) to request `rid`: registered.
fn accept(reg: &mut Registrar, store: &mut MemoryStore, rid: u64, now: u64, n: u32) {
    let outcome = reg
        .on_reply(
            store,
            rid,
            &ok("<sip:u1@127.0.0.1:5060>", Some("600")),
            now,
            fresh(n),
        )
        .unwrap();
    assert!(
        matches!(outcome, ReplyOutcome::Registered { .. }),
        "{outcome:?}"
    );
}

fn register(
    reg: &mut Registrar,
    store: &mut MemoryStore,
    id: RecordId,
    rid: u64,
    now: u64,
    n: u32,
) -> Request {
    let r = due(reg, store, id, rid, now, n);
    accept(reg, store, rid, now, n + 100);
    r
}

#[test]
fn refresh_keeps_call_id_with_reg_keep_callid() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(true, 30));
    register(&mut reg, &mut store, id, 1, NOW, 1);
    let r = due(&mut reg, &mut store, id, 2, NOW + 300, 2);
    assert_eq!(r.header("Call-ID"), Some("call-1"));
    assert_eq!(r.header("CSeq"), Some("11 REGISTER"));
    // The old binding still counts while the refresh is under way.
    let (_, state) = store.get_by_id(id).unwrap();
    assert!(state.is_registered(NOW + 300));
    assert_eq!(state.flags & flags::ONGOING, flags::ONGOING);
}

#[test]
fn refresh_without_keep_callid_starts_a_new_call_id() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    register(&mut reg, &mut store, id, 1, NOW, 1);
    let r = due(&mut reg, &mut store, id, 2, NOW + 300, 2);
    assert_eq!(r.header("Call-ID"), Some("call-2"));
    assert_eq!(r.header("CSeq"), Some("10 REGISTER"));
}

#[test]
fn interval_too_brief_raises_expires_and_retries_now() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    let out = resend(
        reg.on_reply(
            &mut store,
            1,
            &reply(423, &[("Min-Expires", "1800")]),
            NOW,
            fresh(2),
        )
        .unwrap(),
    );
    assert_eq!(out.request.header("Expires"), Some("1800"));
    assert_eq!(out.request.header("Call-ID"), Some("call-1"));
    assert_eq!(out.request.header("CSeq"), Some("11 REGISTER"));
    assert_eq!(store.get_by_id(id).unwrap().1.expires, 1800);
    reg.sent(2, out);
    // Without Min-Expires: twice the current value.
    let out = resend(
        reg.on_reply(&mut store, 2, &reply(423, &[]), NOW, fresh(3))
            .unwrap(),
    );
    assert_eq!(out.request.header("Expires"), Some("3600"));
    reg.sent(3, out);
    // The raised value stays for later refreshes.
    reg.on_reply(
        &mut store,
        3,
        &ok("<sip:u1@h>", Some("3600")),
        NOW,
        fresh(4),
    )
    .unwrap();
    let r = due(&mut reg, &mut store, id, 4, NOW + 1800, 5);
    assert_eq!(r.header("Expires"), Some("3600"));
}

#[test]
fn repeated_423_gives_up() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    let mut rid = 1;
    loop {
        match reg
            .on_reply(
                &mut store,
                rid,
                &reply(423, &[("Min-Expires", "1")]),
                NOW,
                fresh(2),
            )
            .unwrap()
        {
            ReplyOutcome::Resend(out) => {
                let out = *out;
                rid += 1;
                reg.sent(rid, out);
            }
            ReplyOutcome::Failed { status, .. } => {
                assert_eq!(status, 423);
                break;
            }
            other => panic!("{other:?}"),
        }
        assert!(rid < 10);
    }
}

#[test]
fn wrong_password_fails_on_the_second_challenge() {
    let (mut store, id) = one("wrong");
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    let out = resend(
        reg.on_reply(&mut store, 1, &challenge(false), NOW, fresh(2))
            .unwrap(),
    );
    reg.sent(2, out);
    let outcome = reg
        .on_reply(&mut store, 2, &challenge(false), NOW, fresh(3))
        .unwrap();
    assert!(
        matches!(outcome, ReplyOutcome::Failed { status: 401, .. }),
        "{outcome:?}"
    );
    let (_, state) = store.get_by_id(id).unwrap();
    assert_eq!(
        state.flags & (flags::ONGOING | flags::AUTHSENT | flags::DISABLED),
        0
    );
    assert_eq!(state.failures, 1);
    assert_eq!(store.last_report(id), Some(Report::Failed));
}

#[test]
fn stale_challenge_is_answered_again() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    let out = resend(
        reg.on_reply(&mut store, 1, &challenge(false), NOW, fresh(2))
            .unwrap(),
    );
    reg.sent(2, out);
    let out = resend(
        reg.on_reply(&mut store, 2, &challenge(true), NOW, fresh(3))
            .unwrap(),
    );
    assert_eq!(out.request.header("CSeq"), Some("12 REGISTER"));
    assert_eq!(
        out.request
            .headers
            .iter()
            .filter(|(n, _)| n == "Authorization")
            .count(),
        1
    );
}

#[test]
fn realm_of_the_row_must_match() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    let other = reply(
        401,
        &[(
            "WWW-Authenticate",
            "Digest realm=\"other.test\", nonce=\"n\"",
        )],
    );
    let outcome = reg.on_reply(&mut store, 1, &other, NOW, fresh(2)).unwrap();
    assert!(matches!(outcome, ReplyOutcome::Failed { status: 401, .. }));
}

#[test]
fn time_out_fails_keeps_the_valid_binding_and_zero_retry_disables() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(true, 30));
    register(&mut reg, &mut store, id, 1, NOW, 1);
    due(&mut reg, &mut store, id, 2, NOW + 300, 2);
    let outcome = reg
        .on_reply(&mut store, 2, &reply(408, &[]), NOW + 332, fresh(3))
        .unwrap();
    assert!(matches!(outcome, ReplyOutcome::Failed { status: 408, .. }));
    let (_, state) = store.get_by_id(id).unwrap();
    assert!(
        state.is_registered(NOW + 332),
        "binding valid until NOW + 600"
    );
    assert_eq!(state.call_id, "", "next attempt starts a new Call-ID");

    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 0));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    reg.on_reply(&mut store, 1, &reply(503, &[]), NOW, fresh(2))
        .unwrap();
    let (_, state) = store.get_by_id(id).unwrap();
    assert_eq!(state.flags & flags::DISABLED, flags::DISABLED);
    assert!(
        reg.on_due(&mut store, id, DueReason::Retry, NOW + 60, fresh(3))
            .unwrap()
            .is_none()
    );
}

#[test]
fn ongoing_waits_then_resets_and_a_lost_map_resets_at_once() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 60));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    assert!(
        reg.on_due(&mut store, id, DueReason::Refresh, NOW + 59, fresh(2))
            .unwrap()
            .is_none()
    );
    let r = reg
        .on_due(&mut store, id, DueReason::Refresh, NOW + 60, fresh(3))
        .unwrap()
        .unwrap();
    assert_eq!(r.request.header("Call-ID"), Some("call-3"));
    assert_eq!(reg.pending(), 0, "the stale request is forgotten");
    // A late reply to the forgotten request is not ours any more.
    assert!(matches!(
        reg.on_reply(
            &mut store,
            1,
            &ok("<sip:u1@h>", Some("60")),
            NOW + 61,
            fresh(4)
        )
        .unwrap(),
        ReplyOutcome::Unknown
    ));

    // After a swap the new instance has no map: the ONGOING record starts over.
    let mut swapped = Registrar::new(params(false, 60));
    assert!(
        swapped
            .on_due(&mut store, id, DueReason::Retry, NOW + 61, fresh(5))
            .unwrap()
            .is_some()
    );
}

#[test]
fn stalled_counts_as_failed() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, id, 1, NOW, 1);
    assert!(
        reg.on_due(&mut store, id, DueReason::Stalled, NOW + 150, fresh(2))
            .unwrap()
            .is_none()
    );
    let (_, state) = store.get_by_id(id).unwrap();
    assert_eq!((state.last_status, state.failures), (408, 1));
    assert_eq!(reg.pending(), 0);
}

#[test]
fn unregister_sends_expires_zero_in_the_same_call_id() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    register(&mut reg, &mut store, id, 1, NOW, 1);
    let out = reg.unregister(&mut store, id, NOW + 10, fresh(2)).unwrap();
    assert_eq!(out.request.header("Expires"), Some("0"));
    assert_eq!(out.request.header("Call-ID"), Some("call-1"));
    reg.sent(2, out);
    let outcome = reg
        .on_reply(
            &mut store,
            2,
            &ok("<sip:u1@h>;expires=0", None),
            NOW + 10,
            fresh(3),
        )
        .unwrap();
    assert!(matches!(outcome, ReplyOutcome::Unregistered));
    assert!(!store.get_by_id(id).unwrap().1.is_registered(NOW + 10));
    assert_eq!(store.next_due(id), None);
}

#[test]
fn send_failure_is_a_failure() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(false, 30));
    let out = reg
        .on_due(&mut store, id, DueReason::Initial, NOW, fresh(1))
        .unwrap()
        .unwrap();
    let outcome = reg.send_failed(&mut store, out, NOW, "no route").unwrap();
    assert!(matches!(outcome, ReplyOutcome::Failed { status: 503, .. }));
    assert_eq!(store.get_by_id(id).unwrap().1.flags & flags::ONGOING, 0);
}

/// Due → 401 → answered → 200: registered through one challenge (nonce `n1`).
fn register_through_a_challenge(reg: &mut Registrar, store: &mut MemoryStore, id: RecordId) {
    due(reg, store, id, 1, NOW, 1);
    let out = resend(
        reg.on_reply(store, 1, &challenge(false), NOW, fresh(2))
            .unwrap(),
    );
    reg.sent(2, out);
    accept(reg, store, 2, NOW, 3);
}

fn md5_response(nonce: &str, nc: u32, cnonce: &str) -> String {
    compute_response(&DigestInput {
        algorithm: Algorithm::Md5,
        username: "auth-u1",
        realm: "provider.test",
        secret: Secret::Password("pw"),
        nonce,
        method: "REGISTER",
        uri: "sip:provider.test",
        qop: Some(Qop::Auth),
        nc,
        cnonce,
        body: &[],
    })
    .unwrap()
}

#[test]
fn a_refresh_answers_the_last_challenge_before_it_is_asked() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(true, 30));
    register_through_a_challenge(&mut reg, &mut store, id);
    for (n, rid) in [(2u32, 10u64), (3, 11)] {
        let r = due(
            &mut reg,
            &mut store,
            id,
            rid,
            NOW + 100 * u64::from(n - 1),
            10 * n,
        );
        let auth = r.header("Authorization").expect("answered before the ask");
        assert_eq!(field(auth, "nonce"), "n1");
        assert_eq!(field(auth, "nc"), format!("{n:08x}"));
        let cnonce = format!("cnonce{}", 10 * n);
        assert_eq!(field(auth, "cnonce"), cnonce);
        assert_eq!(field(auth, "response"), md5_response("n1", n, &cnonce));
        // The registrar takes it: one transaction, registered.
        accept(&mut reg, &mut store, rid, NOW, 99);
    }
}

#[test]
fn a_refused_early_answer_is_followed_by_the_answer_to_the_new_challenge() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(true, 30));
    register_through_a_challenge(&mut reg, &mut store, id);
    let r = due(&mut reg, &mut store, id, 10, NOW + 100, 10);
    assert!(r.header("Authorization").is_some());
    // The nonce expired: stale, with a new nonce. Answered from nc 1.
    let renewed = reply(
        401,
        &[(
            "WWW-Authenticate",
            "Digest realm=\"provider.test\", nonce=\"n2\", qop=\"auth\", stale=true",
        )],
    );
    let out = resend(
        reg.on_reply(&mut store, 10, &renewed, NOW + 100, fresh(11))
            .unwrap(),
    );
    let auth = out.request.header("Authorization").unwrap();
    assert_eq!(
        (field(auth, "nonce"), field(auth, "nc")),
        ("n2", "00000001")
    );
    reg.sent(12, out);
    accept(&mut reg, &mut store, 12, NOW, 13);
    // The next refresh reuses the new nonce (received 100 s ago, its age counts from then).
    let r = due(&mut reg, &mut store, id, 20, NOW + 350, 20);
    let auth = r.header("Authorization").unwrap();
    assert_eq!(
        (field(auth, "nonce"), field(auth, "nc")),
        ("n2", "00000002")
    );

    // A registrar that refuses reuse without saying stale is answered once too, and the
    // early answer does not count as the one attempt: no failure.
    let out = resend(
        reg.on_reply(&mut store, 20, &challenge(false), NOW + 350, fresh(21))
            .unwrap(),
    );
    let auth = out.request.header("Authorization").unwrap();
    assert_eq!(
        (field(auth, "nonce"), field(auth, "nc")),
        ("n1", "00000001")
    );
}

#[test]
fn no_early_answer_after_a_failure_or_with_reg_reuse_nonce_0() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(params(true, 30));
    register_through_a_challenge(&mut reg, &mut store, id);
    assert_eq!(reg.known.len(), 1);
    let r = due(&mut reg, &mut store, id, 10, NOW + 100, 10);
    assert!(r.header("Authorization").is_some());
    let outcome = reg
        .on_reply(&mut store, 10, &reply(503, &[]), NOW + 100, fresh(11))
        .unwrap();
    assert!(matches!(outcome, ReplyOutcome::Failed { status: 503, .. }));
    let r = due(&mut reg, &mut store, id, 12, NOW + 200, 12);
    assert_eq!(r.header("Authorization"), None);

    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(RegParams {
        reuse_nonce_secs: 0,
        ..params(true, 30)
    });
    register_through_a_challenge(&mut reg, &mut store, id);
    assert!(reg.known.is_empty(), "nothing kept that will not be used");
    let r = due(&mut reg, &mut store, id, 10, NOW + 100, 10);
    assert_eq!(r.header("Authorization"), None);
}

#[test]
fn a_challenge_older_than_reg_reuse_nonce_is_not_answered_early() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(RegParams {
        reuse_nonce_secs: 120,
        ..params(true, 30)
    });
    register_through_a_challenge(&mut reg, &mut store, id);
    let r = due(&mut reg, &mut store, id, 10, NOW + 119, 10);
    assert!(r.header("Authorization").is_some(), "119 s old: answered");
    accept(&mut reg, &mut store, 10, NOW + 119, 11);
    // Used a moment ago, but received 120 s ago: most likely expired at the registrar.
    let r = due(&mut reg, &mut store, id, 12, NOW + 120, 12);
    assert_eq!(r.header("Authorization"), None);
    // The challenge that follows starts a new age.
    let out = resend(
        reg.on_reply(&mut store, 12, &challenge(false), NOW + 120, fresh(13))
            .unwrap(),
    );
    reg.sent(14, out);
    accept(&mut reg, &mut store, 14, NOW + 120, 15);
    let r = due(&mut reg, &mut store, id, 16, NOW + 200, 16);
    assert!(r.header("Authorization").is_some());
}

#[test]
fn challenges_are_kept_for_at_most_reg_reuse_nonce_max_records() {
    let mut store = store_with(
        ["u1", "u2"]
            .map(|u| (account(u), Credentials::Password("pw".into())))
            .to_vec(),
    );
    let find = |store: &MemoryStore, u: &str| store.find(crate::reg::store::LookupKey::LUuid, u)[0];
    let (first, second) = (find(&store, "u1"), find(&store, "u2"));
    let mut reg = Registrar::new(RegParams {
        reuse_nonce_max: 1,
        ..params(true, 30)
    });
    register_through_a_challenge(&mut reg, &mut store, first);
    due(&mut reg, &mut store, second, 3, NOW, 4);
    let out = resend(
        reg.on_reply(&mut store, 3, &challenge(false), NOW, fresh(5))
            .unwrap(),
    );
    reg.sent(4, out);
    let own = ok("<sip:u2@127.0.0.1:5060>", Some("600"));
    let outcome = reg.on_reply(&mut store, 4, &own, NOW, fresh(6)).unwrap();
    assert!(
        matches!(outcome, ReplyOutcome::Registered { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        reg.known.len(),
        1,
        "the second record's challenge is not kept"
    );
    let r = due(&mut reg, &mut store, first, 10, NOW + 100, 10);
    assert!(
        r.header("Authorization").is_some(),
        "the first keeps answering early"
    );
    let r = due(&mut reg, &mut store, second, 12, NOW + 100, 12);
    assert_eq!(
        r.header("Authorization"),
        None,
        "the second is challenged again"
    );
}

#[test]
fn room_for_every_kept_challenge_is_made_once_at_the_first_record() {
    let (mut store, id) = one("pw");
    let mut reg = Registrar::new(RegParams {
        reuse_nonce_max: 5000,
        ..params(true, 30)
    });
    assert_eq!(
        reg.known.capacity(),
        0,
        "nothing reserved before registrations are used"
    );
    register_through_a_challenge(&mut reg, &mut store, id);
    assert_eq!(reg.known.len(), 1);
    let room = reg.known.capacity();
    assert!(room >= 5000, "{room}");
    let r = due(&mut reg, &mut store, id, 10, NOW + 100, 10);
    assert!(r.header("Authorization").is_some());
    assert_eq!(
        reg.known.capacity(),
        room,
        "never grown (rehashed) in a call"
    );
}

/// What the glue copies out of a reply (`Reply::read_from`) is all `on_reply` needs: the
/// same outcome and the same stored state as from every line of the registrar's reply.
#[test]
fn the_headers_read_are_all_a_reply_needs() {
    let common = [
        (
            "Via",
            "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;rport=5060",
        ),
        ("From", "<sip:remote-u1@provider.test>;tag=tag-1"),
        ("To", "<sip:remote-u1@provider.test>;tag=registrar"),
        ("Call-ID", "call-1"),
        ("CSeq", "10 REGISTER"),
        ("Server", "kamailio (5.6.3 (x86_64/linux))"),
        ("Content-Length", "0"),
    ];
    let with = |status: u16, own: &[(&str, &str)]| {
        let mut lines = common.to_vec();
        lines.extend_from_slice(own);
        reply(status, &lines)
    };
    let challenge_line =
        "Digest realm=\"provider.test\", nonce=\"n1\", qop=\"auth\", algorithm=MD5";
    let replies = [
        with(
            200,
            &[
                ("m", "<sip:u1@127.0.0.1:5060>;expires=300"),
                ("Contact", "<sip:other@10.0.0.1>;expires=50"),
                ("Expires", "600"),
            ],
        ),
        with(
            200,
            &[("Contact", "<sip:u1@127.0.0.1:5060>"), ("Expires", "120")],
        ),
        with(401, &[("WWW-Authenticate", challenge_line)]),
        with(407, &[("Proxy-Authenticate", challenge_line)]),
        with(423, &[("Min-Expires", "1800")]),
        with(403, &[("Warning", "399 registrar \"no\"")]),
    ];
    for full in replies {
        let copied = Reply::read_from(full.status, full.reason.clone(), |name| {
            full.values(name).into_iter().map(str::to_owned).collect()
        });
        assert!(copied.headers.len() < full.headers.len());
        let outcome = |reply: &Reply| {
            let (mut store, id) = one("secret");
            let mut reg = Registrar::new(params(false, 30));
            due(&mut reg, &mut store, id, 1, NOW, 1);
            let outcome = reg.on_reply(&mut store, 1, reply, NOW, fresh(2)).unwrap();
            (format!("{outcome:?}"), store.get_by_id(id).unwrap().1)
        };
        assert_eq!(outcome(&copied), outcome(&full), "status {}", full.status);
    }
}

/// A chain reads its row once, when it starts: the challenge and the 200 need only the live
/// state again (the host copies a row as a dozen strings across the component boundary).
#[test]
fn a_chain_reads_its_row_once() {
    let (mut store, id) = one("secret");
    let mut reg = Registrar::new(params(false, 30));
    let first = due(&mut reg, &mut store, id, 1, NOW, 1);
    let reads = store.rows_read();
    let again = resend(
        reg.on_reply(&mut store, 1, &challenge(false), NOW, fresh(2))
            .unwrap(),
    );
    assert!(again.request.header("Authorization").is_some());
    assert_eq!(again.request.header("Call-ID"), first.header("Call-ID"));
    reg.sent(2, again);
    let outcome = reg
        .on_reply(
            &mut store,
            2,
            &ok("<sip:u1@127.0.0.1:5060>", Some("600")),
            NOW,
            fresh(3),
        )
        .unwrap();
    assert!(matches!(
        outcome,
        ReplyOutcome::Registered { granted_secs: 600 }
    ));
    assert_eq!(
        store.rows_read(),
        reads,
        "no row read after the first REGISTER"
    );
    assert!(store.get_by_id(id).unwrap().1.is_registered(NOW + 10));
}

/// A reply draws fresh values (a host call for random bytes in the filter) only when it
/// needs them: a challenge answered needs a cnonce, a 200 nothing.
#[test]
fn only_a_challenge_draws_fresh_values() {
    let mut store = store_with(vec![(account("u1"), Credentials::Password("pw".into()))]);
    let mut reg = Registrar::new(params(false, 30));
    due(&mut reg, &mut store, 1, 1, NOW, 1);
    let drawn = std::cell::Cell::new(0);
    let draw = |n| {
        drawn.set(drawn.get() + 1);
        fresh(n)
    };
    let answer = resend(
        reg.on_reply(&mut store, 1, &challenge(false), NOW, || draw(2))
            .unwrap(),
    );
    assert_eq!(drawn.get(), 1, "the challenge drew a cnonce");
    let authorization = &answer.request.header("Authorization").expect("answered");
    assert_eq!(field(authorization, "cnonce"), "cnonce2");
    reg.sent(2, answer);
    let outcome = reg
        .on_reply(
            &mut store,
            2,
            &ok("<sip:u1@127.0.0.1:5060>", Some("120")),
            NOW,
            || draw(3),
        )
        .unwrap();
    assert!(
        matches!(outcome, ReplyOutcome::Registered { .. }),
        "{outcome:?}"
    );
    assert_eq!(drawn.get(), 1, "the 200 drew nothing");
}

#[test]
fn contact_values_split_at_commas_outside_quotes_and_brackets() {
    let value = r#""Doe, J" <sip:a@h;x=1,2>;expires=60 , <sip:b@h>,sip:c@h;q=0.5,"#;
    assert_eq!(
        split_contacts(value).collect::<Vec<_>>(),
        [
            r#""Doe, J" <sip:a@h;x=1,2>;expires=60"#,
            "<sip:b@h>",
            "sip:c@h;q=0.5",
            ""
        ]
    );
    assert_eq!(split_contacts("").collect::<Vec<_>>(), [""]);
}
