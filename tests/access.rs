//! Who may send through siphost, end to end: SIPp callers with digest credentials (MD5)
//! against a real siphost, a caller from an unidentified loopback address, and an INVITE
//! flood from one while an identified endpoint's calls keep completing.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use md5::{Digest, Md5};

use common::{
    HeaderChecks, PortBlock, Scratch, Siphost, Sipp, SippRole, Transport, record_route_regex,
    render, sip_uri, siphost_proxy_config,
};

const SIPP_TIMEOUT: Duration = Duration::from_secs(60);

/// siphost on `port` forwarding to the callee, with tenant "trunk" owning the socket and
/// the given `[tenant.access]` body.
fn config(port: u16, callee: u16, access: &str) -> String {
    let mut text = siphost_proxy_config(port, &sip_uri(callee, Transport::Udp), 500);
    text.push_str(&format!(
        r#"
[[tenant]]
name = "trunk"
listen = ["udp:127.0.0.1:{port}"]

[tenant.access]
realm = "trunk.test"
{access}
"#
    ));
    text
}

/// Endpoint "alice", identified by her digest username from any source.
const ALICE: &str = r#"
[[tenant.access.endpoint]]
name = "alice"
username = "alice"
password = "wonderland"
"#;

/// The callee; its INVITEs must arrive without our realm's credentials.
fn callee(scratch: &Scratch, test: &str, calls: u32, proxy: u16) -> Sipp {
    let checks = HeaderChecks::new("invite")
        .matches("Record-Route", 1, &record_route_regex(proxy))
        .absent("Proxy-Authorization", 1);
    let xml = render(
        "sipp/uas_call.xml",
        &[
            ("INVITE_CHECKS", checks.xml()),
            ("INVITE_RECORD_ROUTES", checks.resend_lines("Record-Route")),
        ],
    );
    Sipp::start(
        scratch,
        SippRole {
            name: "callee",
            scenario: scratch.write("callee.xml", &xml),
            transport: Transport::Udp,
            ports: PortBlock::reserve(&format!("{test}-callee"), 5),
            remote: None,
            calls,
            rate: None,
            timeout: SIPP_TIMEOUT,
        },
    )
}

#[allow(clippy::too_many_arguments)]
fn caller(
    scratch: &Scratch,
    name: &'static str,
    scenario: &str,
    proxy: u16,
    calls: u32,
    rate: u32,
    source: &str,
    extra: &[&str],
) -> Sipp {
    let vars = if scenario == "uac_call.xml" {
        vec![("FINAL_CHECKS", HeaderChecks::new("final").xml())]
    } else {
        Vec::new()
    };
    let xml = render(&format!("sipp/{scenario}"), &vars);
    start_caller(scratch, name, xml, proxy, calls, rate, source, extra)
}

#[allow(clippy::too_many_arguments)]
fn start_caller(
    scratch: &Scratch,
    name: &'static str,
    xml: String,
    proxy: u16,
    calls: u32,
    rate: u32,
    source: &str,
    extra: &[&str],
) -> Sipp {
    Sipp::start_from(
        scratch,
        SippRole {
            name,
            scenario: scratch.write(&format!("{name}.xml"), &xml),
            transport: Transport::Udp,
            ports: PortBlock::reserve(&format!("{}-{name}", scratch.path().display()), 5),
            remote: Some(proxy),
            calls,
            rate: Some(rate),
            timeout: SIPP_TIMEOUT,
        },
        source,
        extra,
    )
}

#[test]
fn right_password_completes_and_wrong_password_is_challenged_again() {
    let test = "access_right_wrong";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 1);
    let proxy = ports.port(0);
    const CALLS: u32 = 5;
    let mut callee = callee(&scratch, test, CALLS, proxy);
    let _siphost = Siphost::start(&scratch, &config(proxy, callee.port, ALICE));

    let mut right = caller(
        &scratch,
        "right",
        "auth_uac_call.xml",
        proxy,
        CALLS,
        10,
        "127.0.0.4",
        &["-au", "alice", "-ap", "wonderland"],
    );
    right.assert_all_calls_succeeded();

    callee.assert_all_calls_succeeded();

    let mut wrong = caller(
        &scratch,
        "wrong",
        "auth_uac_wrong.xml",
        proxy,
        3,
        10,
        "127.0.0.4",
        &["-au", "alice", "-ap", "queenofhearts"],
    );
    wrong.assert_all_calls_succeeded();
}

#[test]
fn an_expired_nonce_gets_stale_true_and_then_the_call_completes() {
    let test = "access_stale";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 1);
    let proxy = ports.port(0);
    let mut callee = callee(&scratch, test, 1, proxy);
    let access = format!("nonce_expire = 1\n{ALICE}");
    let _siphost = Siphost::start(&scratch, &config(proxy, callee.port, &access));
    let mut stale = caller(
        &scratch,
        "stale",
        "auth_uac_stale.xml",
        proxy,
        1,
        1,
        "127.0.0.4",
        &["-au", "alice", "-ap", "wonderland"],
    );
    stale.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    assert!(
        stale.action_log().contains("stale challenge: stale=true"),
        "{}",
        stale.action_log()
    );
}

const LOCAL_PBX: &str = r#"
[tenant.access.rate_limit]
rate = 5.0
burst = 10

[[tenant.access.endpoint]]
name = "pbx"
source = ["127.0.0.1/32"]
"#;

#[test]
fn a_request_from_another_loopback_address_gets_403() {
    let test = "access_403";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 2);
    let proxy = ports.port(0);
    // Nothing listens there: no request may get through.
    let _siphost = Siphost::start(&scratch, &config(proxy, ports.port(1), LOCAL_PBX));
    let mut stranger = caller(
        &scratch,
        "stranger",
        "uac_forbidden.xml",
        proxy,
        3,
        10,
        "127.0.0.2",
        &[],
    );
    stranger.assert_all_calls_succeeded();
}

#[test]
fn a_flood_from_an_unidentified_source_does_not_stop_real_calls() {
    let test = "access_flood";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 1);
    let proxy = ports.port(0);
    const CALLS: u32 = 30;
    const FLOOD: u32 = 3000;
    let mut callee = callee(&scratch, test, CALLS, proxy);
    let siphost = Siphost::start(&scratch, &config(proxy, callee.port, LOCAL_PBX));
    let mut flood = caller(
        &scratch,
        "flood",
        "flood_invite.xml",
        proxy,
        FLOOD,
        1000,
        "127.0.0.3",
        &[],
    );
    let mut pbx = caller(
        &scratch,
        "pbx",
        "uac_call.xml",
        proxy,
        CALLS,
        10,
        "127.0.0.1",
        &[],
    );
    pbx.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    flood.peer.wait_exit(SIPP_TIMEOUT);
    // Each refusal is logged; once the scanner's bucket is dry it costs nothing more.
    let log = std::fs::read_to_string(siphost.peer.log_path()).expect("siphost log");
    let refused = log.matches("request from an unidentified source").count();
    assert!(
        (1..=200).contains(&refused),
        "expected between 1 and 200 refusals of {FLOOD} flood requests, got {refused}"
    );
}

/// Sends an INVITE from `source` over UDP and returns the Proxy-Authenticate value of the
/// 407 it gets.
fn fetch_challenge(proxy: u16, source: &str) -> String {
    let socket = UdpSocket::bind((source, 0)).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let local = socket.local_addr().expect("local");
    let invite = format!(
        "INVITE sip:service@127.0.0.1:{proxy} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-fetch\r\n\
         From: <sip:fetch@{source}>;tag=fetch\r\n\
         To: <sip:service@127.0.0.1:{proxy}>\r\n\
         Call-ID: fetch-challenge\r\n\
         CSeq: 1 INVITE\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n"
    );
    socket
        .send_to(invite.as_bytes(), ("127.0.0.1", proxy))
        .expect("send");
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a 407");
    let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(reply.starts_with("SIP/2.0 407 "), "{reply}");
    reply
        .lines()
        .find_map(|l| l.strip_prefix("Proxy-Authenticate: "))
        .unwrap_or_else(|| panic!("no challenge in {reply}"))
        .to_owned()
}

fn param(challenge: &str, name: &str) -> String {
    let start = challenge.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
    let len = challenge[start..].find('"').expect("closing quote");
    challenge[start..start + len].to_owned()
}

fn md5_hex(text: &str) -> String {
    Md5::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// MD5, qop=auth credentials answering `challenge` for an INVITE to `uri`, nc=00000001.
fn credentials(challenge: &str, user: &str, password: &str, uri: &str) -> String {
    let (realm, nonce, opaque) = (
        param(challenge, "realm"),
        param(challenge, "nonce"),
        param(challenge, "opaque"),
    );
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("INVITE:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:00000001:0a4f113b:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, cnonce=\"0a4f113b\", nc=00000001, qop=auth, \
         opaque=\"{opaque}\""
    )
}

#[test]
fn credentials_sent_again_with_the_same_nonce_count_are_refused() {
    let test = "access_replay";
    let scratch = Scratch::new(test);
    let ports = PortBlock::reserve(test, 1);
    let proxy = ports.port(0);
    let mut callee = callee(&scratch, test, 1, proxy);
    let _siphost = Siphost::start(&scratch, &config(proxy, callee.port, ALICE));
    let challenge = fetch_challenge(proxy, "127.0.0.4");
    let creds = credentials(
        &challenge,
        "alice",
        "wonderland",
        &format!("sip:service@127.0.0.1:{proxy}"),
    );
    let given = |scenario: &str| {
        render(
            &format!("sipp/{scenario}"),
            &[("CREDENTIALS", creds.clone())],
        )
    };
    let mut first = start_caller(
        &scratch,
        "first",
        given("auth_uac_given_call.xml"),
        proxy,
        1,
        1,
        "127.0.0.4",
        &[],
    );
    first.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    let mut again = start_caller(
        &scratch,
        "again",
        given("auth_uac_given_replay.xml"),
        proxy,
        1,
        1,
        "127.0.0.4",
        &[],
    );
    again.assert_all_calls_succeeded();
}
