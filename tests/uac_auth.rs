//! uac_auth against a real provider edge: Kamailio 5.6 (tests/kamailio/edge-auth.cfg,
//! and edge-auth-sha256.cfg) challenging initial INVITEs with qop=auth for realm
//! trunk.test, in front of a SIPp callee that checks CSeq 2 / 2 / 3 for INVITE, ACK
//! and BYE (the caller's INVITE 1 was challenged once). Kamailio 5.6 with its own
//! uac_auth() in front of the same edge is the reference (it keeps CSeq 1 / 1 / 2).
//!
//! - SIPp callers that authenticate themselves (MD5 only in SIPp 3.6) prove the edge.
//! - A small UDP caller driven by `uac_filter::digest` proves the filter's answers
//!   (MD5 and SHA-256, nc counting, the wrong-password stop) against Kamailio.
//! - siphost with the uac filter (examples/trunk-auth.toml's rule) in front of the edge
//!   is the issue's end-to-end check: MD5 over UDP, SHA-256 over TCP, and a wrong
//!   password passing the 407 back.

mod common;

use std::fs;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    HeaderChecks, Kamailio, LOOPBACK, PortBlock, Scratch, Siphost, Sipp, SippRole, Transport,
    UACREG_V5_SCHEMA, render, sip_uri, siphost_proxy_config, sqlite, tests_dir,
};
use uac_filter::digest::{
    Algorithm, Attempts, AuthError, AuthRequest, ChallengeKind, Credential, NonceCounts,
    answer_challenges, parse_credentials,
};

const SIPP_TIMEOUT: Duration = Duration::from_secs(30);
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const REALM: &str = "trunk.test";
const SDP: &str = "v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n\
                   t=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

/// The edge and its callee, stopped on drop.
struct Provider {
    _kamailio: Kamailio,
    callee: Sipp,
    edge_port: u16,
    _edge_ports: PortBlock,
}

/// The edge with `config` in front of a callee expecting the INVITE (and its ACK)
/// with CSeq 2 and the BYE with 3.
fn provider(
    scratch: &Scratch,
    test: &str,
    config: &str,
    transport: Transport,
    calls: u32,
) -> Provider {
    provider_expecting(scratch, test, config, transport, calls, 2)
}

fn provider_expecting(
    scratch: &Scratch,
    test: &str,
    config: &str,
    transport: Transport,
    calls: u32,
    invite_cseq: u32,
) -> Provider {
    let edge_ports = PortBlock::reserve(&format!("{test}-edge"), 1);
    let callee_ports = PortBlock::reserve(&format!("{test}-callee"), 5);
    let callee_port = callee_ports.port(0);
    let callee = Sipp::start(
        scratch,
        SippRole {
            name: "callee",
            scenario: scratch.write(
                "callee.xml",
                &render(
                    "sipp/uas_auth_call.xml",
                    &[
                        ("INVITE_CSEQ", invite_cseq.to_string()),
                        ("BYE_CSEQ", (invite_cseq + 1).to_string()),
                    ],
                ),
            ),
            transport,
            ports: callee_ports,
            remote: None,
            calls,
            rate: None,
            timeout: SIPP_TIMEOUT,
        },
    );
    let edge_port = edge_ports.port(0);
    let kamailio = Kamailio::start(scratch, config, edge_port, &sip_uri(callee_port, transport));
    Provider {
        _kamailio: kamailio,
        callee,
        edge_port,
        _edge_ports: edge_ports,
    }
}

fn sipp_caller(
    scratch: &Scratch,
    test: &str,
    scenario: &str,
    transport: Transport,
    edge: u16,
    calls: u32,
) -> Sipp {
    Sipp::start(
        scratch,
        SippRole {
            name: "caller",
            scenario: scratch.write("caller.xml", &render(&format!("sipp/{scenario}"), &[])),
            transport,
            ports: PortBlock::reserve(&format!("{test}-caller"), 5),
            remote: Some(edge),
            calls,
            rate: Some(10),
            timeout: SIPP_TIMEOUT,
        },
    )
}

#[test]
fn edge_configs_differ_only_in_the_algorithm() {
    let read = |name: &str| {
        let path = tests_dir().join("kamailio").join(name);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    };
    let md5 = read("edge-auth.cfg");
    let sha256 = read("edge-auth-sha256.cfg");
    let line = "\nmodparam(\"auth\", \"algorithm\", \"SHA-256\")\n";
    assert!(!md5.contains(line));
    assert_eq!(sha256.replacen(line, "\n", 1), md5);
}

fn sipp_authenticates_itself(test: &str, transport: Transport) {
    const CALLS: u32 = 5;
    let scratch = Scratch::new(test);
    let mut provider = provider(&scratch, test, "edge-auth.cfg", transport, CALLS);
    let mut caller = sipp_caller(
        &scratch,
        test,
        "uac_auth_self.xml",
        transport,
        provider.edge_port,
        CALLS,
    );
    caller.assert_all_calls_succeeded();
    provider.callee.assert_all_calls_succeeded();
}

#[test]
fn udp_sipp_caller_authenticates_through_the_edge() {
    sipp_authenticates_itself("uac_auth_sipp_udp", Transport::Udp);
}

#[test]
fn tcp_sipp_caller_authenticates_through_the_edge() {
    sipp_authenticates_itself("uac_auth_sipp_tcp", Transport::Tcp);
}

#[test]
fn sipp_caller_with_a_wrong_password_is_challenged_again() {
    let test = "uac_auth_sipp_wrong";
    let scratch = Scratch::new(test);
    // No call reaches the callee; it only has to be there as the edge's next hop.
    let provider = provider(&scratch, test, "edge-auth.cfg", Transport::Udp, 1);
    let mut caller = sipp_caller(
        &scratch,
        test,
        "uac_auth_self_refused.xml",
        Transport::Udp,
        provider.edge_port,
        3,
    );
    caller.assert_all_calls_succeeded();
}

// ---------------------------------------------------------------------------
// A caller driven by uac_filter::digest

/// A reply as far as this caller needs it.
struct Reply {
    status: u16,
    cseq: String,
    headers: Vec<(String, String)>,
}

impl Reply {
    fn parse(bytes: &[u8]) -> Option<Reply> {
        let text = std::str::from_utf8(bytes).ok()?;
        let head = text.split("\r\n\r\n").next()?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()?
            .strip_prefix("SIP/2.0 ")?
            .get(..3)?
            .parse()
            .ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let cseq = headers.iter().find(|(n, _)| n == "cseq")?.1.clone();
        Some(Reply {
            status,
            cseq,
            headers,
        })
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn first(&self, name: &str) -> &str {
        self.all(name)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no {name} in the {} reply", self.status))
    }
}

/// A request to send: `to_tag` and `route` for in-dialog requests, `extra` header
/// lines (Proxy-Authorization), `branch` to reuse (ACK for a non-2xx).
struct Outgoing<'a> {
    method: &'a str,
    uri: &'a str,
    cseq: u32,
    to_tag: Option<&'a str>,
    route: &'a [&'a str],
    extra: &'a [String],
    branch: Option<&'a str>,
}

impl<'a> Outgoing<'a> {
    fn new(method: &'a str, uri: &'a str, cseq: u32) -> Outgoing<'a> {
        Outgoing {
            method,
            uri,
            cseq,
            to_tag: None,
            route: &[],
            extra: &[],
            branch: None,
        }
    }
}

/// One call's dialog identifiers and the socket it runs on.
struct UdpCaller {
    socket: UdpSocket,
    local_port: u16,
    edge: u16,
    call_id: String,
    from_tag: String,
    request_uri: String,
    sent: u32,
}

impl UdpCaller {
    fn new(edge: u16, call: &str) -> UdpCaller {
        let socket = UdpSocket::bind((LOOPBACK, 0)).expect("bind caller socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let local_port = socket.local_addr().expect("local addr").port();
        UdpCaller {
            socket,
            local_port,
            edge,
            call_id: format!("{call}-{local_port}@127.0.0.1"),
            from_tag: format!("tag{local_port}"),
            request_uri: format!("sip:service@127.0.0.1:{edge}"),
            sent: 0,
        }
    }

    /// Sends `out`; returns its Via branch.
    fn request(&mut self, out: Outgoing<'_>) -> String {
        self.sent += 1;
        let Outgoing {
            method,
            uri,
            cseq,
            to_tag,
            route,
            extra,
            branch,
        } = out;
        let branch = branch.map_or_else(
            || format!("z9hG4bK-uac-{}-{}", self.local_port, self.sent),
            str::to_string,
        );
        let body = if method == "INVITE" { SDP } else { "" };
        let mut text = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch={branch}\r\n\
             From: <sip:caller@127.0.0.1>;tag={}\r\nTo: <sip:service@127.0.0.1>{}\r\n\
             Call-ID: {}\r\nCSeq: {cseq} {}\r\nContact: <sip:caller@127.0.0.1:{}>\r\nMax-Forwards: 70\r\n",
            self.local_port,
            self.from_tag,
            to_tag.map(|t| format!(";tag={t}")).unwrap_or_default(),
            self.call_id,
            method,
            self.local_port,
        );
        for r in route {
            text.push_str(&format!("Route: {r}\r\n"));
        }
        for line in extra {
            text.push_str(line);
            text.push_str("\r\n");
        }
        if !body.is_empty() {
            text.push_str("Content-Type: application/sdp\r\n");
        }
        text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        self.socket
            .send_to(text.as_bytes(), (LOOPBACK, self.edge))
            .expect("send");
        branch
    }

    /// The final reply to the request with CSeq `cseq` (provisional ones skipped).
    fn final_reply(&self, cseq: &str) -> Reply {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut buf = [0u8; 8192];
        while Instant::now() < deadline {
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue;
            };
            if let Some(reply) = Reply::parse(&buf[..n])
                && reply.status >= 200
                && reply.cseq == cseq
            {
                return reply;
            }
        }
        panic!("no final reply to {cseq} within {REPLY_TIMEOUT:?}");
    }

    /// INVITE with `cseq` and `auth` headers; ACKs a non-2xx final reply.
    fn invite(&mut self, cseq: u32, auth: &[String]) -> Reply {
        let uri = self.request_uri.clone();
        let branch = self.request(Outgoing {
            extra: auth,
            ..Outgoing::new("INVITE", &uri, cseq)
        });
        let reply = self.final_reply(&format!("{cseq} INVITE"));
        if reply.status >= 300 {
            let to_tag = to_tag(&reply);
            self.request(Outgoing {
                to_tag: Some(&to_tag),
                branch: Some(&branch),
                ..Outgoing::new("ACK", &uri, cseq)
            });
        }
        reply
    }

    /// ACK for the 200 with `cseq`, then BYE with `cseq + 1`, along the recorded route.
    /// The BYE waits until the callee has logged the ACK: the edge's workers could
    /// otherwise pass the two on in the other order.
    fn ack_and_bye(&mut self, ok: &Reply, cseq: u32, callee: &Sipp) {
        let to_tag = to_tag(ok);
        let contact = ok.first("contact");
        let target = contact
            .trim_start_matches('<')
            .split('>')
            .next()
            .expect("contact uri")
            .to_string();
        let route: Vec<&str> = ok.all("record-route").into_iter().rev().collect();
        let acks_before = callee_acks(callee);
        self.request(Outgoing {
            to_tag: Some(&to_tag),
            route: &route,
            ..Outgoing::new("ACK", &target, cseq)
        });
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while callee_acks(callee) == acks_before {
            assert!(Instant::now() < deadline, "the callee never logged the ACK");
            std::thread::sleep(Duration::from_millis(10));
        }
        self.request(Outgoing {
            to_tag: Some(&to_tag),
            route: &route,
            ..Outgoing::new("BYE", &target, cseq + 1)
        });
        let bye = self.final_reply(&format!("{} BYE", cseq + 1));
        assert_eq!(bye.status, 200, "BYE answered {}", bye.status);
    }

    fn answer(
        &self,
        challenge: &Reply,
        credentials: &[Credential],
        counts: &mut NonceCounts,
        attempts: &mut Attempts,
    ) -> Result<Vec<String>, AuthError> {
        assert_eq!(challenge.status, 407);
        let lines = challenge.all("proxy-authenticate");
        let request = AuthRequest {
            kind: ChallengeKind::Proxy,
            challenges: &lines,
            method: "INVITE",
            uri: &self.request_uri,
            body: SDP.as_bytes(),
            credentials,
            call_credentials: None,
            ha1_mode: false,
            cnonce: &format!("cn{}", self.local_port),
        };
        let answer = answer_challenges(&request, counts, attempts)?;
        Ok(answer
            .values
            .iter()
            .map(|v| format!("{}: {v}", answer.header))
            .collect())
    }
}

/// ACKs the callee has checked and logged so far.
fn callee_acks(callee: &Sipp) -> usize {
    callee
        .action_log()
        .lines()
        .filter(|l| l.starts_with("ACK CSeq"))
        .count()
}

fn to_tag(reply: &Reply) -> String {
    let to = reply.first("to");
    to.split(";tag=")
        .nth(1)
        .expect("To tag")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn digest_answers_accepted(test: &str, config: &str, algorithm: Algorithm) {
    let scratch = Scratch::new(test);
    let mut provider = provider(&scratch, test, config, Transport::Udp, 2);
    let credentials =
        parse_credentials(&[format!("trunkuser:{REALM}:trunkpass")]).expect("credentials");
    let mut counts = NonceCounts::default();

    // Call 1: challenged, answered, CSeq + 1.
    let mut caller = UdpCaller::new(provider.edge_port, "first");
    let challenge = caller.invite(1, &[]);
    assert_eq!(challenge.status, 407, "the edge challenges the INVITE");
    let auth = caller
        .answer(
            &challenge,
            &credentials,
            &mut counts,
            &mut Attempts::default(),
        )
        .expect("answer");
    assert!(
        auth[0].contains(&format!("algorithm={}", algorithm.name())),
        "{auth:?}"
    );
    assert!(auth[0].contains("qop=auth, nc=00000001"), "{auth:?}");
    let ok = caller.invite(2, &auth);
    assert_eq!(
        ok.status, 200,
        "authenticated INVITE answered {}",
        ok.status
    );
    caller.ack_and_bye(&ok, 2, &provider.callee);

    // Call 2 reuses the nonce: the count must be 2, which the edge (nonce_count on) accepts.
    let mut second = UdpCaller::new(provider.edge_port, "second");
    let auth = second
        .answer(
            &challenge,
            &credentials,
            &mut counts,
            &mut Attempts::default(),
        )
        .expect("answer");
    assert!(auth[0].contains("nc=00000002"), "{auth:?}");
    let ok = second.invite(2, &auth);
    assert_eq!(
        ok.status, 200,
        "reused nonce with nc=2 answered {}",
        ok.status
    );
    second.ack_and_bye(&ok, 2, &provider.callee);

    // The same nonce with nc=1 again is a replay: challenged.
    let mut replay = UdpCaller::new(provider.edge_port, "replay");
    let auth = replay
        .answer(
            &challenge,
            &credentials,
            &mut NonceCounts::default(),
            &mut Attempts::default(),
        )
        .expect("answer");
    assert_eq!(
        replay.invite(2, &auth).status,
        407,
        "a replayed nc is refused"
    );

    provider.callee.assert_all_calls_succeeded();
}

#[test]
fn md5_digest_answers_are_accepted_by_kamailio() {
    digest_answers_accepted("uac_auth_digest_md5", "edge-auth.cfg", Algorithm::Md5);
}

#[test]
fn sha256_digest_answers_are_accepted_by_kamailio() {
    digest_answers_accepted(
        "uac_auth_digest_sha256",
        "edge-auth-sha256.cfg",
        Algorithm::Sha256,
    );
}

#[test]
fn a_wrong_password_ends_after_one_answer() {
    let test = "uac_auth_digest_wrong";
    let scratch = Scratch::new(test);
    let provider = provider(&scratch, test, "edge-auth-sha256.cfg", Transport::Udp, 1);
    let credentials =
        parse_credentials(&[format!("trunkuser:{REALM}:wrongpass")]).expect("credentials");
    let (mut counts, mut attempts) = (NonceCounts::default(), Attempts::default());
    let mut caller = UdpCaller::new(provider.edge_port, "wrong");
    let challenge = caller.invite(1, &[]);
    let auth = caller
        .answer(&challenge, &credentials, &mut counts, &mut attempts)
        .expect("first answer");
    let again = caller.invite(2, &auth);
    assert_eq!(again.status, 407);
    assert_eq!(
        caller.answer(&again, &credentials, &mut counts, &mut attempts),
        Err(AuthError::Rejected {
            realm: REALM.into()
        })
    );
}

// ---------------------------------------------------------------------------
// siphost + uac filter in front of the edge (the issue's end-to-end check)

fn uac_filter_wasm() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .ancestors()
        .nth(3)
        .expect("target dir")
        .join("wasm32-wasip2/wasm/uac_filter.wasm");
    assert!(
        path.exists(),
        "{} missing: build the uac filter first",
        path.display()
    );
    path
}

fn siphost_config(port: u16, edge: u16, transport: Transport, password: &str) -> String {
    let mut text = siphost_proxy_config(port, &sip_uri(edge, transport), 500);
    text.push_str(&format!(
        r#"
[[tenant]]
name = "default"
listen = ["udp:127.0.0.1:{port}", "tcp:127.0.0.1:{port}"]
failure_policy = "fail-closed"

# The credential below needs identified endpoints: the test peers on loopback.
[tenant.access]
[[tenant.access.endpoint]]
name = "local"
source = ["127.0.0.1/32"]

[[tenant.filter]]
path = "{wasm}"

[tenant.filter.config]
credential = ["trunkuser:{REALM}:{password}"]

[[tenant.filter.config.rule]]
on = "failure"
when = 't_check_status("401|407")'
do = ['uac_auth()', 't_relay()']
"#,
        wasm = uac_filter_wasm().display(),
    ));
    text
}

/// SIPp caller (INVITE 1, ACK 1, BYE 2, no credentials of its own) through the
/// authenticating proxy on `proxy`: every call completes and the caller sees its own
/// CSeq again in the 200.
fn call_through(scratch: &Scratch, test: &str, proxy: u16, transport: Transport, calls: u32) {
    let final_checks = HeaderChecks::new("final").matches("CSeq", 1, "^ *1 INVITE");
    let caller_xml = render("sipp/uac_call.xml", &[("FINAL_CHECKS", final_checks.xml())]);
    let mut caller = Sipp::start(
        scratch,
        SippRole {
            name: "caller",
            scenario: scratch.write("caller.xml", &caller_xml),
            transport,
            ports: PortBlock::reserve(&format!("{test}-caller"), 5),
            remote: Some(proxy),
            calls,
            rate: Some(10),
            timeout: SIPP_TIMEOUT,
        },
    );
    caller.assert_all_calls_succeeded();
    caller.assert_checked_every_call(&final_checks);
}

fn siphost_answers_for_the_caller(test: &str, config: &str, transport: Transport) {
    const CALLS: u32 = 5;
    let scratch = Scratch::new(test);
    let mut provider = provider(&scratch, test, config, transport, CALLS);
    let siphost_ports = PortBlock::reserve(&format!("{test}-siphost"), 1);
    let port = siphost_ports.port(0);
    let _siphost = Siphost::start(
        &scratch,
        &siphost_config(port, provider.edge_port, transport, "trunkpass"),
    );
    call_through(&scratch, test, port, transport, CALLS);
    provider.callee.assert_all_calls_succeeded();
}

/// A uacreg table (Kamailio's schema, version 5) with one row: the local user `service`
/// (what the SIPp caller dials) is `trunkuser` at the edge on `edge`.
fn uacreg_with_trunk_row(scratch: &Scratch, edge: u16) -> PathBuf {
    let db = scratch.path().join("uac.db");
    let sql = format!(
        "{UACREG_V5_SCHEMA}\
         INSERT INTO uacreg (l_uuid, l_username, l_domain, r_username, r_domain, realm, \
         auth_username, auth_password, auth_proxy, expires) VALUES ('pbx-1', 'service', \
         'pbx.test', 'trunk-line-1', '{REALM}', '{REALM}', 'trunkuser', 'trunkpass', \
         'sip:127.0.0.1:{edge}', 3600);\n"
    );
    sqlite(&db, &sql);
    db
}

/// Kamailio's `uac_reg_request_to("$rU", 1)` in front of the edge: the caller dials the
/// local user, the rule sends the call to the row's remote user at its `auth_proxy` (the
/// default route goes nowhere), and `uac_auth()` answers the edge's 407 with the row's
/// credentials through the `$avp`s the auth_*_avp modparams name. No `credential` list,
/// and `reg_active = 0`: the row only lends its credentials.
#[test]
fn uac_reg_request_to_takes_the_trunk_credentials_from_the_uacreg_row() {
    const CALLS: u32 = 3;
    let test = "uac_auth_request_to";
    let scratch = Scratch::new(test);
    let mut provider = provider(&scratch, test, "edge-auth.cfg", Transport::Udp, CALLS);
    let db = uacreg_with_trunk_row(&scratch, provider.edge_port);
    let siphost_ports = PortBlock::reserve(&format!("{test}-siphost"), 1);
    let port = siphost_ports.port(0);
    let mut config = siphost_proxy_config(port, "sip:127.0.0.1:9", 500);
    config.push_str(&format!(
        r#"
[[tenant]]
name = "default"
listen = ["udp:127.0.0.1:{port}"]
failure_policy = "fail-closed"

[tenant.registrations]
db_url = "sqlite://{db}"

[tenant.access]
[[tenant.access.endpoint]]
name = "local"
source = ["127.0.0.1/32"]

[[tenant.filter]]
path = "{wasm}"

[tenant.filter.config]
reg_active = 0
auth_username_avp = "$avp(auser)"
auth_password_avp = "$avp(apass)"
auth_realm_avp = "$avp(arealm)"

[[tenant.filter.config.rule]]
on = "request"
when = 'is_method("INVITE") && !has_totag()'
do = ['uac_reg_request_to("$rU", 1)']

[[tenant.filter.config.rule]]
on = "failure"
when = 't_check_status("401|407")'
do = ['uac_auth()', 't_relay()']
"#,
        db = db.display(),
        wasm = uac_filter_wasm().display(),
    ));
    let _siphost = Siphost::start(&scratch, &config);
    call_through(&scratch, test, port, Transport::Udp, CALLS);
    provider.callee.assert_all_calls_succeeded();
}

/// Kamailio 5.6's own `uac_auth(); t_relay();` in front of the same edge: the calls
/// complete, but the resent INVITE keeps CSeq 1 (the callee sees 1 / 1 / 2), which
/// servers checking CSeq order refuse — the limitation siphost's filter fixes.
#[test]
fn reference_kamailio_uac_auth_keeps_the_cseq() {
    const CALLS: u32 = 5;
    let test = "uac_auth_reference_kamailio";
    let scratch = Scratch::new(test);
    let mut provider =
        provider_expecting(&scratch, test, "edge-auth.cfg", Transport::Udp, CALLS, 1);
    let proxy_ports = PortBlock::reserve(&format!("{test}-proxy"), 1);
    let port = proxy_ports.port(0);
    let _proxy = Kamailio::start(
        &scratch,
        "uac-auth-proxy.cfg",
        port,
        &sip_uri(provider.edge_port, Transport::Udp),
    );
    call_through(&scratch, test, port, Transport::Udp, CALLS);
    provider.callee.assert_all_calls_succeeded();
}

#[test]
fn udp_siphost_answers_md5_for_the_caller() {
    siphost_answers_for_the_caller("uac_auth_siphost_udp", "edge-auth.cfg", Transport::Udp);
}

#[test]
fn tcp_siphost_answers_sha256_for_the_caller() {
    siphost_answers_for_the_caller(
        "uac_auth_siphost_tcp",
        "edge-auth-sha256.cfg",
        Transport::Tcp,
    );
}

#[test]
fn udp_siphost_with_a_wrong_password_passes_the_407_back() {
    wrong_password_passes_the_407_back("uac_auth_siphost_wrong_udp", Transport::Udp);
}

#[test]
fn tcp_siphost_with_a_wrong_password_passes_the_407_back() {
    wrong_password_passes_the_407_back("uac_auth_siphost_wrong_tcp", Transport::Tcp);
}

/// Every call with a wrong trunk password ends in the edge's 407 at the caller: the filter
/// answers once, the edge challenges again, and the failure goes back (never a loop).
fn wrong_password_passes_the_407_back(test: &str, transport: Transport) {
    let scratch = Scratch::new(test);
    let provider = provider(&scratch, test, "edge-auth.cfg", transport, 1);
    let siphost_ports = PortBlock::reserve(&format!("{test}-siphost"), 1);
    let port = siphost_ports.port(0);
    let _siphost = Siphost::start(
        &scratch,
        &siphost_config(port, provider.edge_port, transport, "wrongpass"),
    );
    let final_checks =
        HeaderChecks::new("final").matches("Proxy-Authenticate", 1, "realm=.trunk[.]test");
    let caller_xml = render(
        "sipp/uac_unreachable.xml",
        &[
            ("FINAL_STATUS", "407".to_string()),
            ("FINAL_CHECKS", final_checks.xml()),
        ],
    );
    let mut caller = Sipp::start(
        &scratch,
        SippRole {
            name: "caller",
            scenario: scratch.write("caller.xml", &caller_xml),
            transport,
            ports: PortBlock::reserve(&format!("{test}-caller"), 5),
            remote: Some(port),
            calls: 3,
            rate: Some(10),
            timeout: SIPP_TIMEOUT,
        },
    );
    caller.assert_all_calls_succeeded();
    caller.assert_checked_every_call(&final_checks);
}
