//! The uac filter's From/To replacement end to end: SIPp caller → siphost running
//! examples/anonymize.toml (ports rewritten) → SIPp callee, over UDP and TCP. The callee sees
//! the anonymous From in the INVITE and in the caller's BYE; the caller sees its own From,
//! display name included, in the 200 OK and in the callee's BYE. With a `uac_replace_to` rule
//! added, the same holds for To.
//!
//! Cross-check with Kamailio 5.6 (uac_replace_from, restore_mode auto): a call set up through
//! Kamailio is hung up by the callee through siphost, which took over Kamailio's address, and
//! the other way round; the caller gets its own From URI back either way.
//!
//! Needs the filter built first: `cargo build --profile wasm --target wasm32-wasip2 -p uac-filter`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{
    HeaderChecks, Kamailio, PortBlock, Scratch, Siphost, Sipp, SippRole, Transport, render,
    sip_uri, tests_dir,
};

const CALLS: u32 = 3;
const SIPP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the callee waits after the ACK before its BYE in the takeover test: time for one
/// proxy to stop and the other to start (the BYE is retransmitted anyway).
const TAKEOVER_PAUSE_MS: u32 = 4000;

/// The rule the To variant appends to the example's rules.
const TO_RULE: &str = r#"
[[tenant.filter.config.rule]]
on = "request"
when = 'is_method("INVITE") && !has_totag()'
do = ['uac_replace_to("\"Callee\"", "sip:callee@anonymous.invalid")']
"#;

fn uac_wasm() -> PathBuf {
    common::wasm_filter("uac_filter")
}

/// examples/anonymize.toml on `proxy`, sending to the callee, with the built filter.
fn config(proxy: u16, callee: &str, replace_to: bool) -> String {
    let example = tests_dir().join("../examples/anonymize.toml");
    let text = std::fs::read_to_string(&example)
        .unwrap_or_else(|e| panic!("read {}: {e}", example.display()));
    for needle in [
        "127.0.0.1:5060",
        "\"sip:127.0.0.1:5090\"",
        "target/wasm32-wasip2/wasm/uac_filter.wasm",
    ] {
        assert!(text.contains(needle), "example lost {needle}");
    }
    let mut text = text
        .replace("127.0.0.1:5060", &format!("127.0.0.1:{proxy}"))
        .replace("\"sip:127.0.0.1:5090\"", &format!("\"{callee}\""))
        .replace(
            "target/wasm32-wasip2/wasm/uac_filter.wasm",
            &uac_wasm().display().to_string(),
        );
    if replace_to {
        text.push_str(TO_RULE);
    }
    text
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Hangup {
    Caller,
    Callee,
}

/// SIPp ERE for a name-addr with a quoted display: `.` stands for `"`, `<` and `>`, which
/// SIPp's attribute parser does not accept.
fn name_addr(display: &str, user: &str, host: &str, tag: Option<&str>) -> String {
    let host = host.replace('.', "[.]");
    let tag = tag.map_or(String::new(), |t| format!(";tag=[0-9]+SIPpTag{t}[0-9]+"));
    format!("^ *.{display}. .sip:{user}@{host}.{tag}$")
}

fn run(test: &str, transport: Transport, hangup: Hangup, replace_to: bool) {
    let scratch = Scratch::new(test);
    let proxy = PortBlock::reserve(test, 1);
    let callee_ports = PortBlock::reserve(&format!("{test}-callee"), 5);
    let caller_ports = PortBlock::reserve(&format!("{test}-caller"), 5);
    let (proxy_port, caller_port) = (proxy.port(0), caller_ports.port(0));
    let caller_host = format!("127.0.0.1:{caller_port}");
    let proxy_host = format!("127.0.0.1:{proxy_port}");

    // What each side must see. From: anonymous downstream, Alice upstream; To: "Callee"
    // downstream when replaced, always Bob upstream.
    let anon_from = |tag| name_addr("Anonymous", "anonymous", "anonymous.invalid", tag);
    let own_from = |tag| name_addr("Alice", "alice", &caller_host, tag);
    let callee_to = |tag| {
        if replace_to {
            name_addr("Callee", "callee", "anonymous.invalid", tag)
        } else {
            name_addr("Bob", "bob", &proxy_host, tag)
        }
    };
    let own_to = |tag| name_addr("Bob", "bob", &proxy_host, tag);
    let vst = if replace_to {
        ";vst=[A-Za-z0-9+/]+-*"
    } else {
        ""
    };
    let record_route = format!(
        "^ *.?sip:127[.]0[.]0[.]1:{proxy_port};(.*;)?lr;ftag=[0-9]+SIPpTag00[0-9]+;vsf=[A-Za-z0-9+/]+-*{vst}.$"
    );

    let invite_checks = HeaderChecks::new("invite")
        .matches("From", 1, &anon_from(Some("00")))
        .matches("To", 1, &callee_to(None))
        .matches("Record-Route", 1, &record_route)
        .absent("Record-Route", 2);
    let final_checks = HeaderChecks::new("final")
        .matches("From", 1, &own_from(Some("00")))
        .matches("To", 1, &own_to(Some("01")));
    // In a BYE from the caller the callee sees its own view; in one from the callee the
    // caller sees its own From as To, display included.
    let (bye_checks, bye_ok_checks) = match hangup {
        Hangup::Caller => (
            HeaderChecks::new("bye")
                .matches("From", 1, &anon_from(Some("00")))
                .matches("To", 1, &callee_to(Some("01"))),
            HeaderChecks::new("byeok")
                .matches("From", 1, &own_from(Some("00")))
                .matches("To", 1, &own_to(Some("01"))),
        ),
        Hangup::Callee => (
            HeaderChecks::new("bye")
                .matches("To", 1, &own_from(Some("00")))
                .matches("From", 1, &own_to(Some("01"))),
            HeaderChecks::new("byeok")
                .matches("To", 1, &anon_from(Some("00")))
                .matches("From", 1, &callee_to(Some("01"))),
        ),
    };
    let (caller_hangup, callee_hangup) = match hangup {
        Hangup::Caller => (
            send_bye_caller(&bye_ok_checks.xml()),
            take_bye(&bye_checks.xml(), "bob"),
        ),
        Hangup::Callee => (
            take_bye(&bye_checks.xml(), "alice"),
            send_bye_callee(&bye_ok_checks.xml(), 200),
        ),
    };

    let callee_xml = render(
        "sipp/uas_anon.xml",
        &[
            ("INVITE_CHECKS", invite_checks.xml()),
            (
                "INVITE_RECORD_ROUTES",
                invite_checks.resend_lines("Record-Route"),
            ),
            ("HANGUP", callee_hangup),
        ],
    );
    let mut callee = Sipp::start(
        &scratch,
        SippRole {
            name: "callee",
            scenario: scratch.write("callee.xml", &callee_xml),
            transport,
            ports: callee_ports,
            remote: None,
            calls: CALLS,
            rate: None,
            timeout: SIPP_TIMEOUT,
        },
    );
    let callee_uri = sip_uri(callee.port, transport);
    let siphost = Siphost::start(&scratch, &config(proxy_port, &callee_uri, replace_to));
    let caller_xml = render(
        "sipp/uac_anon.xml",
        &[
            ("FINAL_CHECKS", final_checks.xml()),
            ("HANGUP", caller_hangup),
        ],
    );
    let mut caller = Sipp::start(
        &scratch,
        SippRole {
            name: "caller",
            scenario: scratch.write("caller.xml", &caller_xml),
            transport,
            ports: caller_ports,
            remote: Some(proxy_port),
            calls: CALLS,
            rate: Some(10),
            timeout: SIPP_TIMEOUT,
        },
    );

    caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    caller.assert_checked_every_call(&final_checks);
    callee.assert_checked_every_call(&invite_checks);
    match hangup {
        Hangup::Caller => {
            callee.assert_checked_every_call(&bye_checks);
            caller.assert_checked_every_call(&bye_ok_checks);
        }
        Hangup::Callee => {
            caller.assert_checked_every_call(&bye_checks);
            callee.assert_checked_every_call(&bye_ok_checks);
        }
    }
    drop(caller);
    drop(siphost);
}

/// The caller hangs up along the recorded route and checks the 200.
fn send_bye_caller(ok_checks: &str) -> String {
    format!(
        r#"<pause milliseconds="200"/>

  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Alice" <sip:alice@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: "Bob" <sip:bob@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      [routes]
      Contact: <sip:alice@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <recv response="200" crlf="true">
    <action>
      {ok_checks}
    </action>
  </recv>"#
    )
}

/// The callee hangs up along the recorded route, with From and To as its INVITE had them
/// (captured by the INVITE checks), and checks the 200.
fn send_bye_callee(ok_checks: &str, pause_ms: u32) -> String {
    format!(
        r#"<pause milliseconds="{pause_ms}"/>

  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From:[$inviteto1];tag=[pid]SIPpTag01[call_number]
      To:[$invitefrom1]
      Call-ID: [call_id]
      CSeq: 1 BYE
      [routes]
      Contact: <sip:bob@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>

  <recv response="200" crlf="true">
    <action>
      {ok_checks}
    </action>
  </recv>"#
    )
}

/// Takes the other side's BYE, checks it, answers 200.
fn take_bye(checks: &str, user: &str) -> String {
    format!(
        r#"<recv request="BYE">
    <action>
      {checks}
    </action>
  </recv>

  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:{user}@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>"#
    )
}

/// Which proxy holds the shared address during a phase of the takeover test.
#[derive(Clone, Copy, Debug)]
enum Proxy {
    Siphost,
    Kamailio,
}

/// Starts a proxy of either kind on `port`; dropping the pair stops it.
fn start(
    proxy: Proxy,
    scratch: &Scratch,
    port: u16,
    callee: &str,
) -> (Option<Siphost>, Option<Kamailio>) {
    match proxy {
        Proxy::Siphost => (
            Some(Siphost::start(scratch, &config(port, callee, false))),
            None,
        ),
        Proxy::Kamailio => (
            None,
            Some(Kamailio::start(scratch, "uac_replace.cfg", port, callee)),
        ),
    }
}

/// The call is set up through `first`; after the ACK `first` stops and `then` takes over
/// its address; the callee's BYE, carrying `first`'s vsf in its Route, goes through `then`.
fn takeover(test: &str, first: Proxy, then: Proxy) {
    let scratch = Scratch::new(test);
    let proxy = PortBlock::reserve(test, 1);
    let callee_ports = PortBlock::reserve(&format!("{test}-callee"), 5);
    let caller_ports = PortBlock::reserve(&format!("{test}-caller"), 5);
    let (proxy_port, caller_port) = (proxy.port(0), caller_ports.port(0));
    let caller_host = format!("127.0.0.1:{caller_port}");
    let proxy_host = format!("127.0.0.1:{proxy_port}");
    let invite_checks = HeaderChecks::new("invite")
        .matches(
            "From",
            1,
            &name_addr("Anonymous", "anonymous", "anonymous.invalid", Some("00")),
        )
        .matches("To", 1, &name_addr("Bob", "bob", &proxy_host, None))
        .matches(
            "Record-Route",
            1,
            &format!(
                "^ *.?sip:127[.]0[.]0[.]1:{proxy_port};(.*;)?lr;ftag=[0-9]+SIPpTag00[0-9]+;vsf=[A-Za-z0-9+/]+-*.$"
            ),
        )
        .absent("Record-Route", 2);
    // A dialog set up elsewhere carries only the URI in vsf: the caller's own URI comes
    // back; the display is whatever the restoring proxy had (Kamailio keeps the replaced one).
    let host = caller_host.replace('.', "[.]");
    let bye_checks = HeaderChecks::new("bye")
        .matches(
            "To",
            1,
            &format!("^ *.*.sip:alice@{host}.;tag=[0-9]+SIPpTag00[0-9]+$"),
        )
        .matches("From", 1, &name_addr("Bob", "bob", &proxy_host, Some("01")));
    let bye_ok_checks = HeaderChecks::new("byeok").matches(
        "To",
        1,
        &name_addr("Anonymous", "anonymous", "anonymous.invalid", Some("00")),
    );
    let callee_hangup = format!(
        "<nop><action><log message=\"acked\"/></action></nop>\n\n  {}",
        send_bye_callee(&bye_ok_checks.xml(), TAKEOVER_PAUSE_MS)
    );
    let callee_xml = render(
        "sipp/uas_anon.xml",
        &[
            ("INVITE_CHECKS", invite_checks.xml()),
            (
                "INVITE_RECORD_ROUTES",
                invite_checks.resend_lines("Record-Route"),
            ),
            ("HANGUP", callee_hangup),
        ],
    );
    let mut callee = Sipp::start(
        &scratch,
        SippRole {
            name: "callee",
            scenario: scratch.write("callee.xml", &callee_xml),
            transport: Transport::Udp,
            ports: callee_ports,
            remote: None,
            calls: 1,
            rate: None,
            timeout: SIPP_TIMEOUT,
        },
    );
    let callee_uri = sip_uri(callee.port, Transport::Udp);
    let first_proxy = start(first, &scratch, proxy_port, &callee_uri);
    let caller_xml = render(
        "sipp/uac_anon.xml",
        &[
            ("FINAL_CHECKS", String::new()),
            ("HANGUP", take_bye(&bye_checks.xml(), "alice")),
        ],
    );
    let mut caller = Sipp::start(
        &scratch,
        SippRole {
            name: "caller",
            scenario: scratch.write("caller.xml", &caller_xml),
            transport: Transport::Udp,
            ports: caller_ports,
            remote: Some(proxy_port),
            calls: 1,
            rate: Some(10),
            timeout: SIPP_TIMEOUT,
        },
    );
    let deadline = std::time::Instant::now() + SIPP_TIMEOUT;
    while !callee.action_log().contains("acked") {
        assert!(
            std::time::Instant::now() < deadline,
            "the callee never got the ACK through {first:?}:\n{}",
            callee.action_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(first_proxy);
    let second = start(then, &scratch, proxy_port, &callee_uri);
    caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    callee.assert_checked_every_call(&invite_checks);
    caller.assert_checked_every_call(&bye_checks);
    callee.assert_checked_every_call(&bye_ok_checks);
    drop(caller);
    drop(second);
}

#[test]
fn call_set_up_through_kamailio_finishes_through_siphost() {
    takeover(
        "uac_replace_kamailio_then_siphost",
        Proxy::Kamailio,
        Proxy::Siphost,
    );
}

#[test]
fn call_set_up_through_siphost_finishes_through_kamailio() {
    takeover(
        "uac_replace_siphost_then_kamailio",
        Proxy::Siphost,
        Proxy::Kamailio,
    );
}

#[test]
fn udp_anonymous_from_caller_hangs_up() {
    run(
        "uac_replace_udp_from_caller_bye",
        Transport::Udp,
        Hangup::Caller,
        false,
    );
}

#[test]
fn udp_anonymous_from_callee_hangs_up() {
    run(
        "uac_replace_udp_from_callee_bye",
        Transport::Udp,
        Hangup::Callee,
        false,
    );
}

#[test]
fn tcp_anonymous_from_caller_hangs_up() {
    run(
        "uac_replace_tcp_from_caller_bye",
        Transport::Tcp,
        Hangup::Caller,
        false,
    );
}

#[test]
fn tcp_anonymous_from_callee_hangs_up() {
    run(
        "uac_replace_tcp_from_callee_bye",
        Transport::Tcp,
        Hangup::Callee,
        false,
    );
}

#[test]
fn udp_replaced_to_caller_hangs_up() {
    run(
        "uac_replace_udp_to_caller_bye",
        Transport::Udp,
        Hangup::Caller,
        true,
    );
}

#[test]
fn udp_replaced_to_callee_hangs_up() {
    run(
        "uac_replace_udp_to_callee_bye",
        Transport::Udp,
        Hangup::Callee,
        true,
    );
}

#[test]
fn tcp_replaced_to_caller_hangs_up() {
    run(
        "uac_replace_tcp_to_caller_bye",
        Transport::Tcp,
        Hangup::Caller,
        true,
    );
}

#[test]
fn tcp_replaced_to_callee_hangs_up() {
    run(
        "uac_replace_tcp_to_callee_bye",
        Transport::Tcp,
        Hangup::Callee,
        true,
    );
}
