//! Deterministic tests of the core: events in, outputs out, time passed in — no sockets, no
//! sleeps. The proxy listens on 127.0.0.1:5060 (UDP) and routes to the UAS by default.

use std::sync::Mutex;

use super::*;
use crate::proxy::hooks::NoFilters;
use tokio::sync::oneshot;

const PROXY: &str = "127.0.0.1:5060";
/// A second UDP listener, for requests that name the socket to leave from.
const PROXY_ALT: &str = "127.0.0.1:5062";
const UAC: &str = "127.0.0.1:5070";
const UAS: &str = "127.0.0.1:5090";

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

struct Harness {
    core: Core,
    decisions: mpsc::UnboundedReceiver<Internal>,
    t0: Instant,
}

fn harness(hooks: Arc<dyn FilterHooks>) -> Harness {
    harness_routed_to(UAS, hooks)
}

fn harness_routed_to(default_route: &str, hooks: Arc<dyn FilterHooks>) -> Harness {
    let text = format!(
        "[[listen]]\ntransport = \"udp\"\naddress = \"{PROXY}\"\n\
         [[listen]]\ntransport = \"udp\"\naddress = \"{PROXY_ALT}\"\n\
         [proxy]\nrecord_route = true\ndefault_route = \"sip:{default_route}\"\n"
    );
    let config = Config::parse(&text).expect("test config");
    let listeners = [PROXY, PROXY_ALT]
        .map(|local| Listener {
            kind: TransportKind::Udp,
            local: addr(local),
            host: "127.0.0.1".to_owned(),
        })
        .to_vec();
    let (internal, decisions) = mpsc::unbounded_channel();
    let stats = Arc::new(ProxyStats::default());
    let credentials = CredentialTables::default();
    let shared = CoreShared {
        access: access::access_by_listener(&config, &listeners, &stats, &credentials)
            .expect("access"),
        hooks,
        stats,
        conn_ids: Arc::new(AtomicU64::new(1)),
    };
    let core = Core::new(&config, listeners, &shared, internal, rand::random()).expect("core");
    Harness {
        core,
        decisions,
        t0: Instant::now(),
    }
}

impl Harness {
    /// A datagram from `from` at `at` after the start; returns what the core sent.
    fn receive(&mut self, from: &str, text: &str, at: Duration) -> Vec<(SocketAddr, Message)> {
        let source = Source {
            kind: TransportKind::Udp,
            listener: 0,
            remote: addr(from),
            conn: None,
        };
        self.core
            .on_message(Bytes::from(text.to_owned()), source, self.t0 + at);
        self.sent()
    }

    fn timers(&mut self, at: Duration) -> Vec<(SocketAddr, Message)> {
        self.core.on_timers(self.t0 + at);
        self.sent()
    }

    /// Feeds the filters' decisions that arrived so far.
    fn decisions(&mut self, at: Duration) -> Vec<(SocketAddr, Message)> {
        while let Ok(internal) = self.decisions.try_recv() {
            self.core.on_internal(internal, self.t0 + at);
        }
        self.sent()
    }

    fn sent(&mut self) -> Vec<(SocketAddr, Message)> {
        self.sent_from()
            .into_iter()
            .map(|(_, remote, message)| (remote, message))
            .collect()
    }

    /// What the core sent, with the index of the listener each datagram left from.
    fn sent_from(&mut self) -> Vec<(usize, SocketAddr, Message)> {
        self.core
            .outputs
            .drain(..)
            .map(|output| match output {
                Output::Datagram {
                    listener,
                    remote,
                    data,
                } => (
                    listener,
                    remote,
                    Message::parse(data).expect("output parses"),
                ),
                other => panic!("unexpected output {other:?}"),
            })
            .collect()
    }

    /// A request from the UAC passed by the filters, forwarded, and answered `status` by the
    /// UAS 10 ms later: the statuses the UAC got once the filters decided on the answer.
    fn answered(&mut self, text: &str, status: u16, reason: &str, at: Duration) -> Vec<u16> {
        self.receive(UAC, text, at);
        let sent = self.decisions(at);
        let forwarded = requests_to(&sent, UAS)[0].clone();
        self.receive(UAS, &answer(&forwarded, status, reason), at + 10 * MS);
        statuses(&self.decisions(at + 10 * MS), UAC)
    }

    /// A request the host itself originates (a filter's send-request), sent as `how` says.
    fn originate(
        &mut self,
        method: &str,
        how: Origination,
        at: Duration,
    ) -> oneshot::Receiver<Result<Answered, SendError>> {
        let uri = format!("sip:bob@{UAS}");
        let mut request = Message::request(Method::from(method), &uri);
        request.append_header("From", "<sip:host@example.com>;tag=h1");
        request.append_header("To", "<sip:bob@example.com>");
        request.append_header("Call-ID", "local-1");
        request.append_header("CSeq", &format!("1 {method}"));
        let (reply, answered) = oneshot::channel();
        let command = Command::SendRequest {
            request: Box::new(request),
            how,
            reply: ReplySink::new(move |answer| {
                let _ = reply.send(answer);
            }),
        };
        self.core.on_command(command, self.t0 + at);
        answered
    }
}

fn sip(lines: &[&str]) -> String {
    format!("{}\r\nContent-Length: 0\r\n\r\n", lines.join("\r\n"))
}

fn request(method: &str, branch: &str, call_id: &str) -> String {
    sip(&[
        &format!("{method} sip:bob@{PROXY} SIP/2.0"),
        &format!("Via: SIP/2.0/UDP {UAC};branch={branch}"),
        "Max-Forwards: 70",
        "From: <sip:alice@example.com>;tag=a1",
        "To: <sip:bob@example.com>",
        &format!("Call-ID: {call_id}"),
        &format!("CSeq: 1 {method}"),
    ])
}

/// The UAS's answer to a forwarded request, echoing its Vias.
fn answer(request: &Message, status: u16, reason: &str) -> String {
    let mut lines = vec![format!("SIP/2.0 {status} {reason}")];
    lines.extend(request.headers("Via").map(|via| format!("Via: {via}")));
    lines.push(format!("From: {}", request.header("From").expect("From")));
    lines.push(format!("To: {};tag=b1", request.header("To").expect("To")));
    lines.push(format!("Call-ID: {}", request.call_id().expect("Call-ID")));
    lines.push(format!("CSeq: {}", request.header("CSeq").expect("CSeq")));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    sip(&refs)
}

fn statuses(sent: &[(SocketAddr, Message)], to: &str) -> Vec<u16> {
    sent.iter()
        .filter(|(remote, _)| *remote == addr(to))
        .filter_map(|(_, msg)| msg.status())
        .collect()
}

fn requests_to<'a>(sent: &'a [(SocketAddr, Message)], to: &str) -> Vec<&'a Message> {
    sent.iter()
        .filter(|(remote, msg)| *remote == addr(to) && msg.is_request())
        .map(|(_, msg)| msg)
        .collect()
}

const MS: Duration = Duration::from_millis(1);

#[test]
fn invite_is_forwarded_retransmitted_on_timer_a_and_answered() {
    let mut h = harness(Arc::new(NoFilters));
    let sent = h.receive(
        UAC,
        &request("INVITE", "z9hG4bKa1", "call-a"),
        Duration::ZERO,
    );
    assert_eq!(statuses(&sent, UAC), [100]);
    let forwarded = requests_to(&sent, UAS);
    assert_eq!(forwarded.len(), 1);
    let forwarded = forwarded[0].clone();
    assert_eq!(forwarded.max_forwards(), Some(69));
    assert_eq!(forwarded.headers("Via").count(), 2);
    assert!(forwarded.header("Record-Route").is_some());

    // Timer A (T1 = 500 ms): the INVITE goes again, unchanged.
    assert!(h.timers(499 * MS).is_empty());
    let again = h.timers(500 * MS);
    assert_eq!(requests_to(&again, UAS).len(), 1);
    assert_eq!(again[0].1.to_bytes(), forwarded.to_bytes());

    let sent = h.receive(UAS, &answer(&forwarded, 180, "Ringing"), 600 * MS);
    assert_eq!(statuses(&sent, UAC), [180]);
    let sent = h.receive(UAS, &answer(&forwarded, 200, "OK"), 700 * MS);
    assert_eq!(statuses(&sent, UAC), [200]);
    assert_eq!(sent[0].1.headers("Via").count(), 1, "our Via removed");
    // Proceeding stopped Timer A: nothing more goes downstream.
    assert!(requests_to(&h.timers(5000 * MS), UAS).is_empty());
}

#[test]
fn unanswered_invite_ends_408_at_timer_b() {
    let mut h = harness(Arc::new(NoFilters));
    h.receive(
        UAC,
        &request("INVITE", "z9hG4bKb1", "call-b"),
        Duration::ZERO,
    );
    let mut invites = 1;
    let mut upstream = Vec::new();
    for step in 1..=66 {
        let sent = h.timers(step * 500 * MS);
        invites += requests_to(&sent, UAS).len();
        upstream.extend(statuses(&sent, UAC).into_iter().map(|s| (step * 500, s)));
    }
    // Sent at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s; Timer B fires at 64·T1 = 32 s, and the
    // 408 goes again on Timer G (T1) while no ACK comes.
    assert_eq!(invites, 7);
    assert_eq!(upstream, [(32_000, 408), (32_500, 408)]);
}

/// Hooks that hold the calls of the kinds given until the test lets them go.
#[derive(Default)]
struct Holding {
    requests: bool,
    held: Mutex<Vec<(HookCall, HookDone)>>,
}

impl FilterHooks for Holding {
    fn applies(&self, _transport: &str, _local: SocketAddr) -> bool {
        true
    }

    fn submit(&self, call: HookCall, done: HookDone) -> Submitted {
        if matches!(call, HookCall::Request { .. }) != self.requests {
            return Submitted::NoFilter(call);
        }
        self.held.lock().expect("held").push((call, done));
        Submitted::Queued
    }
}

impl Holding {
    fn count(&self) -> usize {
        self.held.lock().expect("held").len()
    }

    /// Lets the oldest held call go on untouched.
    fn release_first(&self) {
        let (call, done) = self.held.lock().expect("held").remove(0);
        done(HookResult {
            call,
            decision: Decision::Continue,
        });
    }
}

#[test]
fn cancel_of_a_parked_invite_is_answered_and_the_invite_ends_487() {
    let hooks = Arc::new(Holding {
        requests: true,
        ..Holding::default()
    });
    let mut h = harness(hooks.clone());
    let invite = request("INVITE", "z9hG4bKc1", "call-c");
    assert_eq!(
        statuses(&h.receive(UAC, &invite, Duration::ZERO), UAC),
        [100]
    );
    assert_eq!(hooks.count(), 1);
    // A retransmission is absorbed by the server transaction: no second filter call.
    assert_eq!(statuses(&h.receive(UAC, &invite, 400 * MS), UAC), [100]);
    assert_eq!(hooks.count(), 1);
    let cancel = request("CANCEL", "z9hG4bKc1", "call-c");
    let sent = h.receive(UAC, &cancel, 450 * MS);
    assert_eq!(statuses(&sent, UAC), [200]);
    assert!(requests_to(&sent, UAS).is_empty());

    hooks.release_first();
    let sent = h.decisions(500 * MS);
    assert_eq!(statuses(&sent, UAC), [487]);
    assert!(requests_to(&sent, UAS).is_empty(), "never forwarded");
    assert!(h.core.parked.is_empty());
}

#[test]
fn replies_of_one_context_pass_the_reply_hook_in_order() {
    let hooks = Arc::new(Holding::default());
    let mut h = harness(hooks.clone());
    let sent = h.receive(
        UAC,
        &request("INVITE", "z9hG4bKd1", "call-d"),
        Duration::ZERO,
    );
    let forwarded = requests_to(&sent, UAS)[0].clone();
    let sent = h.receive(UAS, &answer(&forwarded, 180, "Ringing"), 10 * MS);
    assert!(statuses(&sent, UAC).is_empty(), "180 with its filters");
    let sent = h.receive(UAS, &answer(&forwarded, 200, "OK"), 20 * MS);
    assert!(statuses(&sent, UAC).is_empty());
    assert_eq!(hooks.count(), 1, "the 200 waits for the 180's decision");

    hooks.release_first();
    assert_eq!(statuses(&h.decisions(30 * MS), UAC), [180]);
    assert_eq!(hooks.count(), 1, "now the 200 is with the filters");
    hooks.release_first();
    assert_eq!(statuses(&h.decisions(40 * MS), UAC), [200]);
    assert!(
        h.core.contexts.is_empty(),
        "context closed once its lane is empty"
    );
}

/// Hooks that pass every call at once and note the transaction keys they saw and the
/// transactions the core said were over (with whether their dialog was).
#[derive(Default)]
struct Recording {
    seen: Mutex<Vec<String>>,
    ended: Mutex<Vec<(String, bool)>>,
}

impl FilterHooks for Recording {
    fn applies(&self, _transport: &str, _local: SocketAddr) -> bool {
        true
    }

    fn submit(&self, call: HookCall, done: HookDone) -> Submitted {
        let key = call.ctx().transaction_key.clone();
        self.seen.lock().expect("seen").push(key);
        done(HookResult {
            call,
            decision: Decision::Continue,
        });
        Submitted::Queued
    }

    fn transaction_ended(&self, ctx: &HookContext, dialog_over: bool) {
        let key = ctx.transaction_key.clone();
        self.ended.lock().expect("ended").push((key, dialog_over));
    }
}

#[test]
fn a_closed_transaction_is_reported_so_its_filter_state_can_go() {
    let hooks = Arc::new(Recording::default());
    let mut h = harness(hooks.clone());
    h.receive(
        UAC,
        &request("INVITE", "z9hG4bKe1", "call-e"),
        Duration::ZERO,
    );
    let sent = h.decisions(Duration::ZERO);
    let forwarded = requests_to(&sent, UAS)[0].clone();
    h.receive(UAS, &answer(&forwarded, 180, "Ringing"), 10 * MS);
    h.decisions(10 * MS);
    assert!(
        hooks.ended.lock().expect("ended").is_empty(),
        "still ringing"
    );
    h.receive(UAS, &answer(&forwarded, 200, "OK"), 20 * MS);
    assert_eq!(statuses(&h.decisions(20 * MS), UAC), [200]);
    assert!(h.core.contexts.is_empty());
    let seen = hooks.seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 3, "request, 180, 200: {seen:?}");
    assert!(seen.iter().all(|key| *key == seen[0]), "{seen:?}");
    let invite_key = seen[0].clone();
    assert_eq!(
        *hooks.ended.lock().expect("ended"),
        [(invite_key.clone(), false)],
        "the call goes on: its dialog stays"
    );

    // The BYE's answer ends the dialog.
    let bye = request("BYE", "z9hG4bKe2", "call-e").replace(
        "To: <sip:bob@example.com>",
        "To: <sip:bob@example.com>;tag=b1",
    );
    assert_eq!(h.answered(&bye, 200, "OK", 30 * MS), [200]);
    let ended = hooks.ended.lock().expect("ended").clone();
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert_ne!(ended[1].0, invite_key);
    assert!(ended[1].1, "BYE answered: dialog over");

    // An initial INVITE that fails never made a dialog.
    let invite = request("INVITE", "z9hG4bKe3", "call-f");
    // The failure hook runs on the 486, then the 486 goes up.
    assert_eq!(h.answered(&invite, 486, "Busy Here", 50 * MS), [486]);
    let ended = hooks.ended.lock().expect("ended").clone();
    assert_eq!(ended.len(), 3, "{ended:?}");
    assert!(ended[2].1, "failed initial INVITE: dialog over");
}

#[test]
fn max_forwards_zero_gets_483_and_malformed_gets_400() {
    let mut h = harness(Arc::new(NoFilters));
    let text =
        request("INVITE", "z9hG4bKmf", "call-mf").replace("Max-Forwards: 70", "Max-Forwards: 0");
    let sent = h.receive(UAC, &text, Duration::ZERO);
    assert_eq!(statuses(&sent, UAC), [483]);
    assert!(requests_to(&sent, UAS).is_empty());

    let broken =
        request("INVITE", "z9hG4bKbad", "call-bad").replace("CSeq: 1 INVITE", "CSeq: one INVITE");
    h.core.on_message(
        Bytes::from(broken),
        Source {
            kind: TransportKind::Udp,
            listener: 0,
            remote: addr(UAC),
            conn: None,
        },
        h.t0,
    );
    let raw: Vec<Output> = h.core.outputs.drain(..).collect();
    let [Output::Datagram { remote, data, .. }] = raw.as_slice() else {
        panic!("one datagram expected: {raw:?}");
    };
    let text = String::from_utf8_lossy(data);
    assert_eq!(*remote, addr(UAC));
    assert!(
        text.starts_with("SIP/2.0 400 ") && text.contains("Call-ID: call-bad"),
        "{text}"
    );
    assert_eq!(h.core.stats.malformed.load(Ordering::Relaxed), 1);
}

#[test]
fn proxy_require_gets_420_naming_the_unsupported_tags() {
    let mut h = harness(Arc::new(NoFilters));
    let text = request("INVITE", "z9hG4bKpr", "call-pr").replace(
        "Max-Forwards: 70",
        "Max-Forwards: 70\r\nProxy-Require: foo\r\nProxy-Require: bar, baz",
    );
    let sent = h.receive(UAC, &text, Duration::ZERO);
    assert_eq!(statuses(&sent, UAC), [420]);
    assert_eq!(sent[0].1.header("Unsupported"), Some("foo, bar, baz"));
    assert!(requests_to(&sent, UAS).is_empty());
}

#[test]
fn request_routed_back_to_us_is_a_loop() {
    let mut h = harness_routed_to(PROXY, Arc::new(NoFilters));
    let sent = h.receive(
        UAC,
        &request("INVITE", "z9hG4bKloop", "call-loop"),
        Duration::ZERO,
    );
    let looped = requests_to(&sent, PROXY)[0].clone();
    let sent = h.receive(PROXY, &String::from_utf8_lossy(&looped.to_bytes()), MS);
    assert_eq!(statuses(&sent, PROXY), [482]);
}

#[test]
fn lone_cancel_with_max_forwards_zero_gets_483() {
    let mut h = harness(Arc::new(NoFilters));
    let text =
        request("CANCEL", "z9hG4bKmf0", "call-mf0").replace("Max-Forwards: 70", "Max-Forwards: 0");
    let sent = h.receive(UAC, &text, Duration::ZERO);
    assert_eq!(statuses(&sent, UAC), [483]);
    assert!(requests_to(&sent, UAS).is_empty());
}

#[test]
fn stray_response_goes_upstream_only_under_our_via() {
    let mut h = harness(Arc::new(NoFilters));
    let stale = |top: &str| {
        sip(&[
            "SIP/2.0 487 Request Terminated",
            &format!("Via: SIP/2.0/UDP {top};branch=z9hG4bKgone"),
            &format!("Via: SIP/2.0/UDP {UAC};branch=z9hG4bKuacgone"),
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>;tag=b1",
            "Call-ID: call-gone",
            "CSeq: 1 INVITE",
        ])
    };
    // A final after our transaction ended (no client transaction matches) still goes on.
    let sent = h.receive(UAS, &stale(PROXY), Duration::ZERO);
    assert_eq!(statuses(&sent, UAC), [487]);
    assert_eq!(sent[0].1.header_values("Via").count(), 1);
    // Not our Via on top: not ours to route.
    assert!(h.receive(UAS, &stale(UAS), MS).is_empty());
    // Only our Via: it was for us and goes nowhere.
    let only_ours = stale(PROXY).replace(
        &format!("Via: SIP/2.0/UDP {UAC};branch=z9hG4bKuacgone\r\n"),
        "",
    );
    assert!(h.receive(UAS, &only_ours, 2 * MS).is_empty());
}

#[test]
fn unanswered_non_invite_is_resent_on_timer_e_and_ends_408_at_timer_f() {
    let mut h = harness(Arc::new(NoFilters));
    let sent = h.receive(
        UAC,
        &request("OPTIONS", "z9hG4bKo1", "call-o"),
        Duration::ZERO,
    );
    let first = requests_to(&sent, UAS)[0].to_bytes();
    let again = h.timers(500 * MS);
    assert_eq!(
        requests_to(&again, UAS)[0].to_bytes(),
        first,
        "Timer E resends it unchanged"
    );
    let mut upstream = Vec::new();
    for step in 2..=64 {
        upstream.extend(statuses(&h.timers(step * 500 * MS), UAC));
    }
    assert_eq!(upstream, [408], "Timer F at 64·T1");
}

#[test]
fn overloaded_filters_answer_a_request_503_with_retry_after() {
    struct Full;
    impl FilterHooks for Full {
        fn applies(&self, _transport: &str, _local: SocketAddr) -> bool {
            true
        }

        fn submit(&self, call: HookCall, _done: HookDone) -> Submitted {
            Submitted::Overloaded(call)
        }
    }
    let mut h = harness(Arc::new(Full));
    let sent = h.receive(
        UAC,
        &request("INVITE", "z9hG4bKf1", "call-f"),
        Duration::ZERO,
    );
    assert_eq!(statuses(&sent, UAC), [100, 503]);
    assert_eq!(sent[1].1.header("Retry-After"), Some(OVERLOAD_RETRY_AFTER));
    assert!(requests_to(&sent, UAS).is_empty());
    assert_eq!(h.core.stats.overloaded.load(Ordering::Relaxed), 1);
}

#[test]
fn without_a_filter_the_hooks_are_never_submitted() {
    /// Hooks that apply nowhere and fail the test if the proxy hands them a call anyway.
    struct Nowhere;
    impl FilterHooks for Nowhere {
        fn applies(&self, _transport: &str, _local: SocketAddr) -> bool {
            false
        }

        fn submit(&self, _call: HookCall, _done: HookDone) -> Submitted {
            panic!("submit called although no filter applies")
        }
    }
    let mut h = harness(Arc::new(Nowhere));
    let sent = h.receive(
        UAC,
        &request("INVITE", "z9hG4bKn1", "call-n"),
        Duration::ZERO,
    );
    let forwarded = requests_to(&sent, UAS)[0].clone();
    // Counted as a call all the same, once: its retransmission is absorbed.
    h.receive(UAC, &request("INVITE", "z9hG4bKn1", "call-n"), 50 * MS);
    assert_eq!(h.core.stats.calls.load(Ordering::Relaxed), 1);
    let sent = h.receive(UAS, &answer(&forwarded, 486, "Busy Here"), 100 * MS);
    assert_eq!(
        statuses(&sent, UAC),
        [486],
        "reply and failure hooks skipped too"
    );
}

#[test]
fn a_local_request_leaves_from_the_listener_it_names() {
    let mut h = harness(Arc::new(NoFilters));
    let alt = Origination {
        local: Some((TransportKind::Udp, addr(PROXY_ALT))),
        ..Origination::default()
    };
    let mut answered = h.originate("OPTIONS", alt, Duration::ZERO);
    let sent = h.sent_from();
    assert_eq!(sent.len(), 1);
    let (listener, remote, options) = &sent[0];
    assert_eq!((*listener, *remote), (1, addr(UAS)));
    let via = options.top_via().expect("our Via");
    assert_eq!(
        format!("{}:{}", via.host, via.port.unwrap_or(5060)),
        PROXY_ALT,
        "Via names the socket it left from"
    );
    let reply = answer(options, 200, "OK");
    h.receive(UAS, &reply, 10 * MS);
    let answered = answered.try_recv().expect("answered").expect("final reply");
    assert_eq!(answered.response.status(), Some(200));
    assert_eq!(
        (answered.transport, answered.peer),
        (TransportKind::Udp, addr(UAS))
    );

    // Without a choice it leaves from the first listener; a socket we do not listen on, or
    // of another transport than the next hop's, is refused and nothing is sent.
    h.originate("OPTIONS", Origination::default(), 20 * MS);
    assert_eq!(h.sent_from()[0].0, 0);
    for local in [
        (TransportKind::Udp, addr("127.0.0.1:5099")),
        (TransportKind::Tcp, addr(PROXY)),
    ] {
        let how = Origination {
            local: Some(local),
            ..Origination::default()
        };
        let mut refused = h.originate("OPTIONS", how, 30 * MS);
        assert!(h.sent_from().is_empty());
        assert!(matches!(
            refused.try_recv(),
            Ok(Err(SendError::NoSuchListener(..)))
        ));
    }
}

#[test]
fn a_local_invite_waits_fr_timeout_for_a_reply_then_fr_inv_timeout_after_each_ringing() {
    let mut h = harness(Arc::new(NoFilters));
    let how = Origination {
        timeout: Some(Duration::from_secs(2)),
        invite_timeout: Some(Duration::from_secs(5)),
        ..Origination::default()
    };
    let mut answered = h.originate("INVITE", how, Duration::ZERO);
    let invite = requests_to(&h.sent(), UAS)[0].clone();
    // 180 at 1.9 s, inside fr_timeout; again at 6 s, inside fr_inv_timeout: each restarts it.
    h.receive(UAS, &answer(&invite, 180, "Ringing"), 1900 * MS);
    h.receive(UAS, &answer(&invite, 180, "Ringing"), 6000 * MS);
    let quiet = h.timers(10_999 * MS);
    assert!(
        quiet
            .iter()
            .all(|(_, m)| m.method() != Some(&Method::Cancel))
    );
    assert!(answered.try_recv().is_err(), "still waiting at 10.999 s");
    // 5 s after the last 180: the INVITE is CANCELled and the filter gets its time-out.
    let sent = h.timers(11_000 * MS);
    let cancels = requests_to(&sent, UAS);
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].method(), Some(&Method::Cancel));
    assert!(matches!(answered.try_recv(), Ok(Err(SendError::Timeout))));
    // The INVITE lingers to ACK the callee's 487.
    let sent = h.receive(
        UAS,
        &answer(&invite, 487, "Request Terminated"),
        11_100 * MS,
    );
    let acks = requests_to(&sent, UAS);
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].method(), Some(&Method::Ack));
}

#[test]
fn a_local_request_without_a_reply_ends_at_fr_timeout() {
    let mut h = harness(Arc::new(NoFilters));
    let how = Origination {
        timeout: Some(Duration::from_secs(2)),
        ..Origination::default()
    };
    let mut answered = h.originate("MESSAGE", how, Duration::ZERO);
    h.sent();
    h.timers(1999 * MS);
    assert!(answered.try_recv().is_err());
    h.timers(2000 * MS);
    assert!(matches!(answered.try_recv(), Ok(Err(SendError::Timeout))));
    // It is over: no retransmission after the time-out.
    assert!(requests_to(&h.timers(10_000 * MS), UAS).is_empty());
    assert!(h.core.clients.is_empty());
}

#[test]
fn a_local_request_in_flight_when_the_core_stops_is_answered_stopped() {
    let mut h = harness(Arc::new(NoFilters));
    let mut answered = h.originate("MESSAGE", Origination::default(), Duration::ZERO);
    h.sent();
    assert!(answered.try_recv().is_err(), "still in flight");
    drop(h);
    assert!(matches!(answered.try_recv(), Ok(Err(SendError::Stopped))));
}

#[test]
fn a_ringing_local_invite_without_limits_is_cancelled_at_timer_c() {
    let mut h = harness(Arc::new(NoFilters));
    let mut answered = h.originate("INVITE", Origination::default(), Duration::ZERO);
    let invite = requests_to(&h.sent(), UAS)[0].clone();
    h.receive(UAS, &answer(&invite, 180, "Ringing"), 100 * MS);
    assert!(h.timers(TIMER_C).is_empty(), "Timer C runs from the 180");
    let sent = h.timers(TIMER_C + 100 * MS);
    assert_eq!(requests_to(&sent, UAS)[0].method(), Some(&Method::Cancel));
    assert!(matches!(answered.try_recv(), Ok(Err(SendError::Timeout))));
    // No 487 ever comes: the INVITE is dropped 64·T1 later, and the core is drained.
    h.timers(TIMER_C + 100 * MS + Duration::from_secs(32));
    assert!(
        !h.core
            .clients
            .values()
            .any(|c| c.machine.kind() == Kind::Invite)
    );
}

#[test]
fn transactions_that_only_wait_to_end_are_ended_together_on_a_grid() {
    let mut h = harness(Arc::new(NoFilters));
    // Five MESSAGEs answered 40 ms apart, all inside one step of the grid.
    for i in 0..5u32 {
        let text = request("MESSAGE", &format!("z9hG4bKgrid{i}"), &format!("grid-{i}"));
        let sent = h.receive(UAC, &text, 40 * MS * i);
        let forwarded = requests_to(&sent, UAS)[0].clone();
        let sent = h.receive(UAS, &answer(&forwarded, 200, "OK"), 40 * MS * i + MS);
        assert_eq!(statuses(&sent, UAC), vec![200]);
    }
    let mut exact = Vec::new();
    let mut served = Vec::new();
    for (&id, entry) in &h.core.servers {
        assert!(entry.machine.only_waiting(), "Timer J is all that is left");
        let at = entry.machine.poll_timeout().expect("Timer J");
        let queued = h
            .core
            .timers
            .deadline(&TimerKey::Server(id))
            .expect("queued");
        assert!(
            queued >= at && queued < at + WAIT_STEP,
            "late by less than a step"
        );
        exact.push(at);
        served.push(queued);
    }
    for list in [&mut exact, &mut served] {
        list.sort();
        list.dedup();
    }
    assert_eq!(exact.len(), 5);
    assert!(
        served.len() <= 2,
        "{} wake-ups for five transactions",
        served.len()
    );
    // Nothing ends before its own deadline; all have ended a step after the last.
    h.timers(exact[0] - h.t0 - MS);
    assert_eq!(h.core.servers.len(), 5);
    h.timers(exact[4] - h.t0 + WAIT_STEP);
    assert!(h.core.servers.is_empty() && h.core.clients.is_empty());
}

#[test]
fn a_retransmission_deadline_is_never_moved() {
    let mut h = harness(Arc::new(NoFilters));
    h.receive(
        UAC,
        &request("INVITE", "z9hG4bKexact", "exact-1"),
        Duration::ZERO,
    );
    let (&id, entry) = h.core.clients.iter().next().expect("the INVITE's branch");
    assert!(!entry.machine.only_waiting());
    assert_eq!(
        h.core.timers.deadline(&TimerKey::Client(id)),
        entry.machine.poll_timeout(),
        "Timer A is served when it is due"
    );
}
