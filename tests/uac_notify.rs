//! uac_req_send and uac:reply end to end, through examples/notify.toml (ports rewritten):
//! SIPp callers dial 112 → siphost → SIPp callee, and siphost sends a MESSAGE to a SIPp
//! monitoring phone over real sockets.
//!
//! - the call goes on and the monitor gets one MESSAGE per call, with the caller in it;
//! - the monitor challenges (401, qop=auth) and the auser/apasswd answer is accepted
//!   (SIPp's verifyauth), CSeq 10 then 11;
//! - uac:reply rules see evcode/evtype/evparam: a monitor answering 480, and one that never
//!   answers (fr_timeout → the host's local 408, evtype 2), alert the SIPp backup phone,
//!   whose MESSAGE body carries what the rule saw;
//! - `sock` picks the listener a request leaves from; an INVITE's fr_inv_timeout restarts
//!   on each 180 and, when it runs out, CANCELs the INVITE (a SIPp phone that rings).
//!
//! Needs the filter built first: `cargo build --profile wasm --target wasm32-wasip2 -p uac-filter`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{
    HeaderChecks, PortBlock, Scratch, Siphost, Sipp, SippRole, Transport, record_route_regex,
    render, tests_dir, via_regex,
};

const SIPP_TIMEOUT: Duration = Duration::from_secs(30);

fn uac_wasm() -> PathBuf {
    common::wasm_filter("uac_filter")
}

/// Where the example's peers are in one test.
struct Ports {
    proxy: u16,
    callee: u16,
    monitor: u16,
    backup: u16,
}

/// examples/notify.toml with this test's ports, the built filter, and `fr_timeout_ms`.
fn config(ports: &Ports, fr_timeout_ms: u32) -> String {
    let example = tests_dir().join("../examples/notify.toml");
    let text = std::fs::read_to_string(&example)
        .unwrap_or_else(|e| panic!("read {}: {e}", example.display()));
    let replacements = [
        ("127.0.0.1:5060", format!("127.0.0.1:{}", ports.proxy)),
        (
            "\"sip:127.0.0.1:5090\"",
            format!("\"sip:127.0.0.1:{}\"", ports.callee),
        ),
        ("127.0.0.1:5095", format!("127.0.0.1:{}", ports.monitor)),
        ("127.0.0.1:5096", format!("127.0.0.1:{}", ports.backup)),
        (
            "$uac_req(fr_timeout) = 5000",
            format!("$uac_req(fr_timeout) = {fr_timeout_ms}"),
        ),
        (
            "target/wasm32-wasip2/wasm/uac_filter.wasm",
            uac_wasm().display().to_string(),
        ),
    ];
    let mut text = text;
    for (needle, with) in replacements {
        assert!(text.contains(needle), "example lost {needle}");
        text = text.replace(needle, &with);
    }
    text
}

/// A SIPp UAS taking `calls` MESSAGEs whose body matches `body` (a POSIX ERE; `None`:
/// any) and whose headers pass `checks`, answering `status`.
fn message_phone(
    scratch: &Scratch,
    name: &'static str,
    ports: PortBlock,
    body: Option<&str>,
    checks: &HeaderChecks,
    status: &str,
    calls: u32,
) -> Sipp {
    let body_check = body.map_or(String::new(), |regex| {
        format!(
            r#"<ereg regexp="{regex}" search_in="body" check_it="true" assign_to="body"/>
      <log message="body [$body]"/>
      "#
        )
    });
    let xml = render(
        "sipp/uas_message.xml",
        &[
            ("MESSAGE_CHECKS", format!("{body_check}{}", checks.xml())),
            ("STATUS", status.to_owned()),
        ],
    );
    Sipp::start(
        scratch,
        SippRole {
            name,
            scenario: scratch.write(&format!("{name}.xml"), &xml),
            transport: Transport::Udp,
            ports,
            remote: None,
            calls,
            rate: None,
            timeout: SIPP_TIMEOUT,
        },
    )
}

/// The callee of the emergency calls: the INVITE comes through the proxy on `proxy`
/// (its Record-Route), and the call goes on as usual.
fn callee(scratch: &Scratch, ports: PortBlock, proxy: u16, calls: u32) -> Sipp {
    let checks = HeaderChecks::new("invite").matches("Record-Route", 1, &record_route_regex(proxy));
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
            ports,
            remote: None,
            calls,
            rate: None,
            timeout: SIPP_TIMEOUT,
        },
    )
}

/// Callers dialling `number` through the proxy.
fn caller(scratch: &Scratch, test: &str, proxy: u16, number: &str, calls: u32) -> Sipp {
    let xml = render("sipp/uac_call.xml", &[("FINAL_CHECKS", String::new())]);
    Sipp::start_from(
        scratch,
        SippRole {
            name: "caller",
            scenario: scratch.write("caller.xml", &xml),
            transport: Transport::Udp,
            ports: PortBlock::reserve(&format!("{test}-caller"), 5),
            remote: Some(proxy),
            calls,
            rate: Some(5),
            timeout: SIPP_TIMEOUT,
        },
        "127.0.0.1",
        &["-s", number],
    )
}

struct Setup {
    scratch: Scratch,
    ports: Ports,
    blocks: Vec<PortBlock>,
}

fn setup(test: &str) -> Setup {
    let scratch = Scratch::new(test);
    let proxy = PortBlock::reserve(test, 1);
    let callee = PortBlock::reserve(&format!("{test}-callee"), 5);
    let monitor = PortBlock::reserve(&format!("{test}-monitor"), 5);
    let backup = PortBlock::reserve(&format!("{test}-backup"), 5);
    let ports = Ports {
        proxy: proxy.port(0),
        callee: callee.port(0),
        monitor: monitor.port(0),
        backup: backup.port(0),
    };
    Setup {
        scratch,
        ports,
        blocks: vec![proxy, callee, monitor, backup],
    }
}

#[test]
fn an_emergency_call_goes_on_and_the_monitor_gets_a_message() {
    const CALLS: u32 = 3;
    let test = "uac_notify_message";
    let Setup {
        scratch,
        ports,
        mut blocks,
    } = setup(test);
    let (_backup_ports, monitor_ports, callee_ports) = (
        blocks.pop(),
        blocks.pop().expect("monitor"),
        blocks.pop().expect("callee"),
    );
    let checks = HeaderChecks::new("message")
        .matches("From", 1, "^ *.sip:alerts@siphost[.]invalid.;tag=.+$")
        .matches(
            "To",
            1,
            &format!("^ *.sip:monitor@127[.]0[.]0[.]1:{}.$", ports.monitor),
        )
        .matches("CSeq", 1, "^ *10 MESSAGE$")
        .matches("Content-Type", 1, "^ *text/plain$");
    let mut monitor = message_phone(
        &scratch,
        "monitor",
        monitor_ports,
        Some("^Emergency call to 112 from sip:sipp@127[.]0[.]0[.]1:[0-9]+ [(]Call-ID [^)]+[)]$"),
        &checks,
        "200 OK",
        CALLS,
    );
    let mut callee = callee(&scratch, callee_ports, ports.proxy, CALLS);
    let siphost = Siphost::start(&scratch, &config(&ports, 5000));
    let mut caller = caller(&scratch, test, ports.proxy, "112", CALLS);
    caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    monitor.assert_all_calls_succeeded();
    monitor.assert_checked_every_call(&checks);
    drop(siphost);
}

#[test]
fn the_monitor_challenges_and_the_auser_apasswd_answer_is_accepted() {
    const CALLS: u32 = 2;
    let test = "uac_notify_auth";
    let Setup {
        scratch,
        ports,
        mut blocks,
    } = setup(test);
    let (_backup_ports, monitor_ports, callee_ports) = (
        blocks.pop(),
        blocks.pop().expect("monitor"),
        blocks.pop().expect("callee"),
    );
    let xml = render(
        "sipp/uas_message_auth.xml",
        &[
            ("USER", "alerts".to_owned()),
            ("PASSWORD", "alerts-secret".to_owned()),
        ],
    );
    let mut monitor = Sipp::start(
        &scratch,
        SippRole {
            name: "monitor",
            scenario: scratch.write("monitor.xml", &xml),
            transport: Transport::Udp,
            ports: monitor_ports,
            remote: None,
            calls: CALLS,
            rate: None,
            timeout: SIPP_TIMEOUT,
        },
    );
    let mut callee = callee(&scratch, callee_ports, ports.proxy, CALLS);
    let siphost = Siphost::start(&scratch, &config(&ports, 5000));
    let mut caller = caller(&scratch, test, ports.proxy, "911", CALLS);
    caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    monitor.assert_all_calls_succeeded();
    let log = monitor.action_log();
    assert_eq!(
        log.lines()
            .filter(|l| l.starts_with("checked auth: valid=true cseq="))
            .count(),
        CALLS as usize,
        "every answer verified:\n{log}"
    );
    drop(siphost);
}

/// The backup phone must get the rule's report with `evcode`/`evtype` and the Call-ID
/// of the emergency call as `evparam`.
fn backup_alerted(test: &str, monitor_status: Option<&str>, evcode: u16, evtype: u8) {
    let Setup {
        scratch,
        ports,
        mut blocks,
    } = setup(test);
    let (backup_ports, monitor_ports, callee_ports) = (
        blocks.pop().expect("backup"),
        blocks.pop().expect("monitor"),
        blocks.pop().expect("callee"),
    );
    let report = HeaderChecks::new("report").matches(
        "To",
        1,
        &format!("^ *.sip:backup@127[.]0[.]0[.]1:{}.$", ports.backup),
    );
    let mut backup = message_phone(
        &scratch,
        "backup",
        backup_ports,
        Some(&format!(
            "^monitor failed: evcode={evcode} evtype={evtype} evparam=[^ ]+$"
        )),
        &report,
        "200 OK",
        1,
    );
    // No monitor at all: its port stays reserved and silent.
    let (monitor, _silent) = match monitor_status {
        Some(status) => (
            Some(message_phone(
                &scratch,
                "monitor",
                monitor_ports,
                None,
                &HeaderChecks::new("monitor"),
                status,
                1,
            )),
            None,
        ),
        None => (None, Some(monitor_ports)),
    };
    let mut callee = callee(&scratch, callee_ports, ports.proxy, 1);
    let siphost = Siphost::start(&scratch, &config(&ports, 2000));
    let mut caller = caller(&scratch, test, ports.proxy, "112", 1);
    caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    if let Some(mut monitor) = monitor {
        monitor.assert_all_calls_succeeded();
    }
    backup.assert_all_calls_succeeded();
    backup.assert_checked_every_call(&report);
    drop(siphost);
}

#[test]
fn uac_reply_rules_see_the_monitors_480_as_evcode() {
    backup_alerted(
        "uac_notify_480",
        Some("480 Temporarily Unavailable"),
        480,
        1,
    );
}

#[test]
fn a_silent_monitor_times_out_after_fr_timeout_as_a_local_408() {
    backup_alerted("uac_notify_timeout", None, 408, 2);
}

/// `siphost rpc` against the admin listener; (succeeded, stdout, stderr).
fn siphost_rpc(admin: u16, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siphost"))
        .args(["rpc", "--admin", &format!("127.0.0.1:{admin}")])
        .args(args)
        .output()
        .expect("siphost rpc runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET /metrics`, parsed with a Prometheus text parser: `name{label=value,…}` → value.
fn scrape(admin: u16) -> std::collections::BTreeMap<String, f64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", admin)).expect("connect admin");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let (head, text) = raw.split_once("\r\n\r\n").expect("http head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("prometheus text parses");
    parsed
        .samples
        .into_iter()
        .filter_map(|s| {
            let mut labels: Vec<String> =
                s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            labels.sort();
            let value = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            Some((format!("{}{{{}}}", s.metric, labels.join(",")), value))
        })
        .collect()
}

#[test]
fn uac_req_send_over_rpc_reaches_the_monitor_and_is_counted() {
    let test = "uac_notify_rpc";
    let Setup {
        scratch,
        ports,
        mut blocks,
    } = setup(test);
    let (_backup_ports, monitor_ports, _callee_ports) =
        (blocks.pop(), blocks.pop().expect("monitor"), blocks.pop());
    let admin_ports = PortBlock::reserve(&format!("{test}-admin"), 1);
    let admin = admin_ports.port(0);
    let checks = HeaderChecks::new("rpc")
        .matches("From", 1, "^ *.sip:alerts@siphost[.]invalid.;tag=rpcftag$")
        .matches("To", 1, "^ *.sip:noc@monitor[.]test.;tag=rpcttag$")
        .matches("Call-ID", 1, "^ *rpc-call-1$")
        .matches("CSeq", 1, "^ *5 MESSAGE$")
        .matches("Content-Type", 1, "^ *text/plain$");
    let mut monitor = message_phone(
        &scratch,
        "monitor",
        monitor_ports,
        Some("^sent over rpc$"),
        &checks,
        "200 OK",
        1,
    );
    let mut text = config(&ports, 5000);
    text.push_str(&format!("\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"));
    let siphost = Siphost::start(&scratch, &text);

    // Missing ruri: a clear error, nothing sent.
    let (ok, _, err) = siphost_rpc(admin, &["uac.req_send", "default", "method=MESSAGE"]);
    assert!(!ok);
    assert!(err.contains("$uac_req(ruri) is required"), "{err}");

    let ruri = format!("ruri=sip:monitor@127.0.0.1:{}", ports.monitor);
    let (ok, out, err) = siphost_rpc(
        admin,
        &[
            "--json",
            "uac.req_send",
            "default",
            "method=MESSAGE",
            &ruri,
            "furi=sip:alerts@siphost.invalid",
            "turi=sip:noc@monitor.test",
            "ftag=rpcftag",
            "ttag=rpcttag",
            "callid=rpc-call-1",
            "cseqno=5",
            "hdrs=Content-Type: text/plain",
            "body=sent over rpc",
            "apasswd=never-echoed",
        ],
    );
    assert!(ok, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(answer["method"], "MESSAGE");
    assert!(answer["request_id"].as_u64().is_some(), "{answer}");
    assert!(!out.contains("never-echoed"), "{out}");
    monitor.assert_all_calls_succeeded();
    monitor.assert_checked_every_call(&checks);

    let samples = scrape(admin);
    let sample = |name: &str| {
        samples
            .get(&format!(
                "siphost_filter_metric_total{{name={name},tenant=default}}"
            ))
            .copied()
            .unwrap_or_else(|| panic!("no {name} in {samples:#?}"))
    };
    assert_eq!(sample("uac_req_sent"), 1.0);
    assert_eq!(sample("uac_req_failed"), 1.0);
    drop(siphost);
}

/// A SIPp answer to the INVITE the phone took (`checks` captured its Via and CSeq).
fn phone_reply(status: &str, checks: &HeaderChecks) -> String {
    format!(
        r#"<send>
    <![CDATA[

      SIP/2.0 {status}
      {vias}
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      {cseq}
      Content-Length: 0

    ]]>
  </send>"#,
        vias = checks.resend_lines("Via"),
        cseq = checks.resend_lines("CSeq"),
    )
}

/// A phone on `ports` that rings `rings` times, `pause_ms` apart, then ends with `ending`
/// (SIPp XML after the last 180).
fn ringing_phone(
    scratch: &Scratch,
    ports: PortBlock,
    checks: &HeaderChecks,
    rings: usize,
    pause_ms: u32,
    ending: &str,
) -> Sipp {
    let ring = phone_reply("180 Ringing", checks);
    let pause = format!("<pause milliseconds=\"{pause_ms}\"/>");
    let ringing = vec![ring; rings].join(&format!("\n  {pause}\n  "));
    let xml = render(
        "sipp/uas_ringing.xml",
        &[
            ("INVITE_CHECKS", checks.xml()),
            ("RINGING", ringing),
            ("ENDING", ending.to_owned()),
        ],
    );
    Sipp::start(
        scratch,
        SippRole {
            name: "phone",
            scenario: scratch.write("phone.xml", &xml),
            transport: Transport::Udp,
            ports,
            remote: None,
            calls: 1,
            rate: None,
            timeout: SIPP_TIMEOUT,
        },
    )
}

/// examples/notify.toml plus a second UDP listener on `alt`, the admin listener on `admin`,
/// and a rule telling the backup phone how each INVITE sent over RPC ended.
fn config_with_alt_listener(ports: &Ports, alt: u16, admin: u16) -> String {
    let mut text = config(ports, 5000);
    text.push_str(&format!(
        r#"
[[tenant.filter.config.rule]]
on = "event"
event = "uac:reply"
when = '$uac_req(method) == "INVITE"'
do = [
  '$uac_req(method) = "MESSAGE"',
  '$uac_req(ruri) = "sip:backup@127.0.0.1:{backup}"',
  '$uac_req(body) = "invite ended: evcode=$uac_req(evcode) evtype=$uac_req(evtype)"',
  '$uac_req(callid) = ""',
  '$uac_req(evroute) = 0',
  'uac_req_send()',
]

[[listen]]
transport = "udp"
address = "127.0.0.1:{alt}"

[admin]
listen = "127.0.0.1:{admin}"
"#,
        backup = ports.backup,
    ));
    text
}

#[test]
fn uac_req_send_leaves_from_the_socket_sock_names() {
    let test = "uac_notify_sock";
    let Setup {
        scratch,
        ports,
        mut blocks,
    } = setup(test);
    let (_backup_ports, monitor_ports, _callee_ports) =
        (blocks.pop(), blocks.pop().expect("monitor"), blocks.pop());
    let extra = PortBlock::reserve(&format!("{test}-extra"), 2);
    let (alt, admin) = (extra.port(0), extra.port(1));
    // Both MESSAGEs must come from the second listener, as their Via says.
    let checks = HeaderChecks::new("sock").matches("Via", 1, &via_regex(Transport::Udp, alt));
    let mut monitor = message_phone(
        &scratch,
        "monitor",
        monitor_ports,
        None,
        &checks,
        "200 OK",
        1,
    );
    let siphost = Siphost::start(&scratch, &config_with_alt_listener(&ports, alt, admin));
    let ruri = format!("ruri=sip:monitor@127.0.0.1:{}", ports.monitor);
    let sock = format!("sock=udp:127.0.0.1:{alt}");
    // A malformed sock is refused before anything is sent.
    let (ok, _, err) = siphost_rpc(
        admin,
        &[
            "uac.req_send",
            "default",
            "method=MESSAGE",
            &ruri,
            "sock=udp:x",
        ],
    );
    assert!(!ok);
    assert!(err.contains("sock"), "{err}");
    let (ok, _, err) = siphost_rpc(
        admin,
        &["uac.req_send", "default", "method=MESSAGE", &ruri, &sock],
    );
    assert!(ok, "{err}");
    monitor.assert_all_calls_succeeded();
    monitor.assert_checked_every_call(&checks);
    drop(siphost);
}

/// An INVITE sent over RPC to a ringing phone (that ends `busy`, else waits for a CANCEL)
/// with fr_timeout 1 s and fr_inv_timeout `fr_inv_ms`; the backup phone must hear `ended`.
fn ringing_invite(test: &str, fr_inv_ms: u32, busy: bool, ended: &str) {
    let Setup {
        scratch,
        ports,
        mut blocks,
    } = setup(test);
    let (backup_ports, phone_ports, _callee_ports) = (
        blocks.pop().expect("backup"),
        blocks.pop().expect("monitor"),
        blocks.pop(),
    );
    let extra = PortBlock::reserve(&format!("{test}-extra"), 2);
    let (alt, admin) = (extra.port(0), extra.port(1));
    let invite = HeaderChecks::new("invite")
        .matches("Via", 1, &via_regex(Transport::Udp, ports.proxy))
        .matches("CSeq", 1, "^ *[0-9]+ INVITE$");
    let ending = if busy {
        format!(
            "{}\n  <recv request=\"ACK\"/>",
            phone_reply("486 Busy Here", &invite)
        )
    } else {
        format!(
            r#"<recv request="CANCEL"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  {}
  <recv request="ACK"/>"#,
            phone_reply("487 Request Terminated", &invite)
        )
    };
    // Busy: rings at 0, 1.5 and 3 s, then 486 at 4.5 s; each reply comes within
    // fr_inv_timeout (2.5 s) of the last, though the whole exceeds it. Otherwise one ring,
    // and the CANCEL when fr_inv_timeout runs out.
    let rings = if busy { 3 } else { 1 };
    let mut phone = ringing_phone(&scratch, phone_ports, &invite, rings, 1500, &ending);
    let report = format!("^invite ended: {ended}$");
    let mut backup = message_phone(
        &scratch,
        "backup",
        backup_ports,
        Some(&report),
        &HeaderChecks::new("report"),
        "200 OK",
        1,
    );
    let siphost = Siphost::start(&scratch, &config_with_alt_listener(&ports, alt, admin));
    let ruri = format!("ruri=sip:phone@127.0.0.1:{}", ports.monitor);
    let fr_inv = format!("fr_inv_timeout={fr_inv_ms}");
    let (ok, _, err) = siphost_rpc(
        admin,
        &[
            "uac.req_send",
            "default",
            "method=INVITE",
            &ruri,
            "fr_timeout=1000",
            &fr_inv,
            "evroute=1",
        ],
    );
    assert!(ok, "{err}");
    phone.assert_all_calls_succeeded();
    backup.assert_all_calls_succeeded();
    drop(siphost);
}

#[test]
fn each_180_restarts_fr_inv_timeout_so_a_long_ringing_invite_gets_its_final_reply() {
    ringing_invite("uac_notify_ringing", 2500, true, "evcode=486 evtype=1");
}

#[test]
fn a_ringing_invite_past_fr_inv_timeout_is_cancelled_and_ends_a_local_408() {
    ringing_invite("uac_notify_ring_out", 1000, false, "evcode=408 evtype=2");
}
