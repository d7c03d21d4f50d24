//! The example proxy-wasm SDK filter in a running siphost (examples/proxy-wasm.toml
//! as shipped, ports substituted), driven by SIPp: the callee sees `X-Proxy-Wasm: hello` on every INVITE; User-Agent blocked-agent
//! gets 403. A misbehaving proxy-wasm module (loop, trap, memory) is contained
//! by its tenant's limits and fail-closed policy while a tenant beside it
//! completes every call; a module's local reply reaches the caller with its body.
//!
//! Needs `cargo build --profile wasm --target wasm32-wasip1 -p proxy-wasm-filter -p proxy-wasm-probe`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use common::{
    HeaderChecks, PortBlock, Scratch, Siphost, Sipp, SippRole, Transport, record_route_regex,
    render, sip_uri, siphost_proxy_config, tests_dir,
};

const SIPP_TIMEOUT: Duration = Duration::from_secs(60);
const CALLS: u32 = 10;

fn module(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let path = exe
        .ancestors()
        .nth(3)
        .expect("target dir")
        .join(format!("wasm32-wasip1/wasm/{name}.wasm"));
    assert!(path.exists(), "{} missing: build it first", path.display());
    path
}

fn proxy_wasm_filter() -> PathBuf {
    module("proxy_wasm_filter")
}

/// examples/proxy-wasm.toml as shipped, with the test's ports and the built filter.
fn example_config(proxy: u16, callee: u16) -> String {
    let example = tests_dir().join("../examples/proxy-wasm.toml");
    let text = std::fs::read_to_string(&example)
        .unwrap_or_else(|e| panic!("read {}: {e}", example.display()));
    for needle in [
        "127.0.0.1:5060",
        "\"sip:127.0.0.1:5090\"",
        "target/wasm32-wasip1/wasm/proxy_wasm_filter.wasm",
    ] {
        assert!(text.contains(needle), "example lost {needle}");
    }
    text.replace("127.0.0.1:5060", &format!("127.0.0.1:{proxy}"))
        .replace(
            "\"sip:127.0.0.1:5090\"",
            &format!("\"{}\"", sip_uri(callee, Transport::Udp)),
        )
        .replace(
            "target/wasm32-wasip1/wasm/proxy_wasm_filter.wasm",
            &proxy_wasm_filter().display().to_string(),
        )
}

fn rpc(admin: u16, method: &str, params: Value) -> Value {
    let addr = SocketAddr::from(([127, 0, 0, 1], admin));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime
        .block_on(siphost::admin::client::call(addr, method, params))
        .unwrap_or_else(|e| panic!("rpc {method}: {e:#}"))
}

/// A caller whose every INVITE carries `extra` header lines and is answered
/// `status` by the proxy, after `checks` on that answer.
fn refused_caller(status: u16, extra: &str, checks: String) -> String {
    render(
        "sipp/uac_unreachable.xml",
        &[
            ("FINAL_STATUS", status.to_string()),
            ("FINAL_CHECKS", checks),
        ],
    )
    .replacen(
        "Max-Forwards: 70",
        &format!("Max-Forwards: 70\n      {extra}"),
        1,
    )
}

fn sipp(
    scratch: &Scratch,
    name: &'static str,
    ports: PortBlock,
    remote: Option<u16>,
    xml: &str,
) -> Sipp {
    Sipp::start(
        scratch,
        SippRole {
            name,
            scenario: scratch.write(&format!("{name}.xml"), xml),
            transport: Transport::Udp,
            ports,
            remote,
            calls: CALLS,
            rate: remote.map(|_| 10),
            timeout: SIPP_TIMEOUT,
        },
    )
}

#[test]
fn calls_carry_the_filter_header_and_the_blocked_agent_gets_403() {
    let test = "proxy_wasm_sipp";
    let scratch = Scratch::new(test);
    let proxy_ports = PortBlock::reserve(test, 1);
    let proxy = proxy_ports.port(0);
    let callee_ports = PortBlock::reserve(&format!("{test}-callee"), 5);
    let callee_port = callee_ports.port(0);
    let config = example_config(proxy, callee_port);
    let checks = HeaderChecks::new("invite")
        .matches("X-Proxy-Wasm", 1, "^ *hello$")
        .matches("Record-Route", 1, &record_route_regex(proxy));
    let callee_xml = render(
        "sipp/uas_call.xml",
        &[
            ("INVITE_CHECKS", checks.xml()),
            ("INVITE_RECORD_ROUTES", checks.resend_lines("Record-Route")),
        ],
    );
    let mut callee = sipp(&scratch, "callee", callee_ports, None, &callee_xml);
    let _siphost = Siphost::start(&scratch, &config);

    let call = render(
        "sipp/uac_call.xml",
        &[("FINAL_CHECKS", HeaderChecks::new("final").xml())],
    );
    let mut caller = sipp(
        &scratch,
        "caller",
        PortBlock::reserve(&format!("{test}-caller"), 5),
        Some(proxy),
        &call,
    );
    let refused = render(
        "sipp/uac_unreachable.xml",
        &[
            ("FINAL_STATUS", "403".to_string()),
            ("FINAL_CHECKS", HeaderChecks::new("refused").xml()),
        ],
    )
    .replacen(
        "Max-Forwards: 70",
        "Max-Forwards: 70\n      User-Agent: blocked-agent",
        1,
    );
    let mut blocked = sipp(
        &scratch,
        "blocked",
        PortBlock::reserve(&format!("{test}-blocked"), 5),
        Some(proxy),
        &refused,
    );

    caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    callee.assert_checked_every_call(&checks);
    blocked.assert_all_calls_succeeded();
}

/// Tenant "good" (the example filter) on one socket and tenant "bad" (the
/// probe module misbehaving as `mode`, fail-closed) on another: every call to
/// bad is answered 500 while good's calls all complete with the filter's header.
fn contained(mode: &str, counter: &str, cpu_limit_ms: u32) {
    const CALLS: u32 = 20;
    let test = format!("proxy_wasm_sipp_{mode}");
    let scratch = Scratch::new(&test);
    let proxy_ports = PortBlock::reserve(&test, 3);
    let (good, bad, admin) = (
        proxy_ports.port(0),
        proxy_ports.port(1),
        proxy_ports.port(2),
    );
    let callee_ports = PortBlock::reserve(&format!("{test}-callee"), 5);
    let callee_port = callee_ports.port(0);
    let mut config = siphost_proxy_config(good, &sip_uri(callee_port, Transport::Udp), 500);
    config.push_str(&format!(
        r#"
[[listen]]
transport = "udp"
address = "127.0.0.1:{bad}"

[admin]
listen = "127.0.0.1:{admin}"

[[tenant]]
name = "good"
listen = ["udp:127.0.0.1:{good}"]
failure_policy = "fail-open"
[[tenant.filter]]
path = "{example}"

[[tenant]]
name = "bad"
listen = ["udp:127.0.0.1:{bad}"]
failure_policy = "fail-closed"
memory_limit_mib = 16
cpu_limit_ms = {cpu_limit_ms}
[[tenant.filter]]
path = "{probe}"
config = {{ plugin_config = "{mode}" }}
"#,
        example = proxy_wasm_filter().display(),
        probe = module("proxy_wasm_probe").display(),
    ));
    let checks = HeaderChecks::new("invite")
        .matches("X-Proxy-Wasm", 1, "^ *hello$")
        .matches("Record-Route", 1, &record_route_regex(good));
    let callee_xml = render(
        "sipp/uas_call.xml",
        &[
            ("INVITE_CHECKS", checks.xml()),
            ("INVITE_RECORD_ROUTES", checks.resend_lines("Record-Route")),
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
            calls: CALLS,
            rate: None,
            timeout: SIPP_TIMEOUT,
        },
    );
    let _siphost = Siphost::start(&scratch, &config);

    let mut bad_caller = Sipp::start(
        &scratch,
        SippRole {
            name: "badcaller",
            scenario: scratch.write(
                "badcaller.xml",
                &refused_caller(500, "X-Misbehave: yes", HeaderChecks::new("rejected").xml()),
            ),
            transport: Transport::Udp,
            ports: PortBlock::reserve(&format!("{test}-bad"), 5),
            remote: Some(bad),
            calls: CALLS,
            rate: Some(10),
            timeout: SIPP_TIMEOUT,
        },
    );
    let call = render(
        "sipp/uac_call.xml",
        &[("FINAL_CHECKS", HeaderChecks::new("final").xml())],
    );
    let mut good_caller = Sipp::start(
        &scratch,
        SippRole {
            name: "goodcaller",
            scenario: scratch.write("goodcaller.xml", &call),
            transport: Transport::Udp,
            ports: PortBlock::reserve(&format!("{test}-good"), 5),
            remote: Some(good),
            calls: CALLS,
            rate: Some(10),
            timeout: SIPP_TIMEOUT,
        },
    );

    good_caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    callee.assert_checked_every_call(&checks);
    bad_caller.assert_all_calls_succeeded();

    let status = rpc(admin, "filter.list", json!([]));
    let tenant = |name: &str| {
        status["tenants"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == json!(name)).cloned())
            .unwrap_or_else(|| panic!("tenant {name}: {status}"))
    };
    let (bad_status, good_status) = (tenant("bad"), tenant("good"));
    let failures = bad_status["counters"][counter].as_u64().unwrap_or(0);
    assert!(
        failures >= u64::from(CALLS),
        "bad tenant {counter}: {failures}: {bad_status}"
    );
    // Each failed VM was replaced: one instantiation per failure at least.
    let made = bad_status["counters"]["instantiations"]
        .as_u64()
        .unwrap_or(0);
    assert!(made > failures, "bad tenant instantiations: {bad_status}");
    for kind in ["timeouts", "traps", "out_of_memory"] {
        assert_eq!(
            good_status["counters"][kind],
            json!(0),
            "good tenant: {good_status}"
        );
    }
}

#[test]
fn an_endless_loop_is_contained_beside_a_healthy_tenant() {
    contained("loop", "timeouts", 20);
}

#[test]
fn a_trap_is_contained_beside_a_healthy_tenant() {
    contained("trap", "traps", 1000);
}

#[test]
fn growing_memory_past_the_limit_is_contained_beside_a_healthy_tenant() {
    contained("oom", "out_of_memory", 1000);
}

#[test]
fn a_local_reply_reaches_the_caller_with_its_body() {
    let test = "proxy_wasm_sipp_body";
    let scratch = Scratch::new(test);
    let proxy = PortBlock::reserve(test, 1).port(0);
    // Nothing listens at the default route: only the module's reply answers.
    let mut config = siphost_proxy_config(proxy, "sip:127.0.0.1:9", 500);
    config.push_str(&format!(
        "\n[[tenant]]\nname = \"default\"\nlisten = [\"udp:127.0.0.1:{proxy}\"]\nfailure_policy = \"fail-closed\"\n[[tenant.filter]]\npath = \"{}\"\nconfig = {{ plugin_config = \"none\" }}\n",
        module("proxy_wasm_probe").display()
    ));
    let _siphost = Siphost::start(&scratch, &config);
    let body = "busy until 5";
    let checks = HeaderChecks::new("busy")
        .matches("Content-Type", 1, "^ *text/plain$")
        .matches("Content-Length", 1, &format!("^ *{}$", body.len()))
        .matches("x-probe", 1, "^ *reply$");
    let xml = refused_caller(
        486,
        &format!("X-Reply-Body: {body}"),
        format!(
            r#"{}
      <ereg regexp="^{body}$" search_in="body" check_it="true" assign_to="busybody"/>
      <log message="body [$busybody]"/>"#,
            checks.xml()
        ),
    );
    let mut caller = sipp(
        &scratch,
        "caller",
        PortBlock::reserve(&format!("{test}-caller"), 5),
        Some(proxy),
        &xml,
    );
    caller.assert_all_calls_succeeded();
    caller.assert_checked_every_call(&checks);
    let bodies = caller
        .action_log()
        .lines()
        .filter(|l| l.starts_with(&format!("body {body}")))
        .count();
    assert_eq!(bodies, CALLS as usize, "{}", caller.action_log());
}

/// The slot swaps between the proxy-wasm example and the same logic as a
/// component (tests/filters/stamp) ten times while calls flow: every INVITE
/// reaches the callee with the header, and no call is lost.
#[test]
fn hot_swap_between_the_two_abis_under_load_drops_no_call() {
    const CALLS: u32 = 60;
    let test = "proxy_wasm_sipp_swap";
    let scratch = Scratch::new(test);
    let proxy_ports = PortBlock::reserve(test, 2);
    let (proxy, admin) = (proxy_ports.port(0), proxy_ports.port(1));
    let callee_ports = PortBlock::reserve(&format!("{test}-callee"), 5);
    let callee_port = callee_ports.port(0);
    let mut config = siphost_proxy_config(proxy, &sip_uri(callee_port, Transport::Udp), 500);
    config.push_str(&format!(
        "\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n[[tenant]]\nname = \"default\"\nlisten = [\"udp:127.0.0.1:{proxy}\"]\nfailure_policy = \"fail-closed\"\n[[tenant.filter]]\npath = \"{}\"\n",
        proxy_wasm_filter().display()
    ));
    let checks = HeaderChecks::new("invite")
        .matches("X-Proxy-Wasm", 1, "^ *hello$")
        .matches("Record-Route", 1, &record_route_regex(proxy));
    let callee_xml = render(
        "sipp/uas_call.xml",
        &[
            ("INVITE_CHECKS", checks.xml()),
            ("INVITE_RECORD_ROUTES", checks.resend_lines("Record-Route")),
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
            calls: CALLS,
            rate: None,
            timeout: SIPP_TIMEOUT,
        },
    );
    let _siphost = Siphost::start(&scratch, &config);
    let call = render(
        "sipp/uac_call.xml",
        &[("FINAL_CHECKS", HeaderChecks::new("final").xml())],
    );
    let mut caller = Sipp::start(
        &scratch,
        SippRole {
            name: "caller",
            scenario: scratch.write("caller.xml", &call),
            transport: Transport::Udp,
            ports: PortBlock::reserve(&format!("{test}-caller"), 5),
            remote: Some(proxy),
            calls: CALLS,
            rate: Some(10),
            timeout: SIPP_TIMEOUT,
        },
    );
    let calls_seen = || {
        let status = rpc(admin, "filter.list", json!([]));
        status["tenants"][0]["counters"]["calls"]
            .as_u64()
            .unwrap_or(0)
    };
    // The first swap waits until calls are under way (SIPp's start-up varies).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while calls_seen() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "no call reached the filter"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let component = proxy_wasm_filter()
        .ancestors()
        .nth(3)
        .expect("target dir")
        .join("wasm32-wasip2/wasm/filter_stamp.wasm");
    assert!(component.exists(), "{} missing", component.display());
    let versions = [component, proxy_wasm_filter()];
    // 60 calls at 10/s last 6 s: a swap every 400 ms once calls flow.
    for i in 0..10 {
        let path = versions[i % 2].display().to_string();
        rpc(admin, "filter.reload", json!(["default", path]));
        std::thread::sleep(Duration::from_millis(400));
    }
    caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    callee.assert_checked_every_call(&checks);
    let status = rpc(admin, "filter.list", json!([]));
    assert_eq!(
        status["tenants"][0]["counters"]["swaps"],
        json!(10),
        "{status}"
    );
}
