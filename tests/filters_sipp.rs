//! Filter runtime under SIPp load through a real siphost: misbehaving filters
//! (endless loop, trap, out of memory, panic) are contained by their tenant's
//! policy while a second tenant beside them completes every call, and a
//! filter hot-swapped 10 times mid-load drops no call.
//!
//! Needs the test filters built first (see tests/filters_runtime.rs).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{
    HeaderChecks, PortBlock, Scratch, Siphost, Sipp, SippRole, Transport, record_route_regex,
    render, sip_uri, siphost_proxy_config,
};
use serde_json::{Value, json};

const SIPP_TIMEOUT: Duration = Duration::from_secs(60);

fn filter(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SIPHOST_FILTER_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("test binary path");
            exe.ancestors()
                .nth(3)
                .expect("target dir")
                .join("wasm32-wasip2")
                .join("wasm")
        }
    };
    let path = dir.join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} missing: build the test filters first",
        path.display()
    );
    path
}

/// siphost on `good` (tenant "good", marking filter a) and `bad` (tenant
/// "bad", `bad_filter`), forwarding to the callee, admin on `admin`.
fn config(good: u16, bad: u16, admin: u16, callee: u16, bad_filter: &str) -> String {
    let mut text = siphost_proxy_config(good, &sip_uri(callee, Transport::Udp), 500);
    text.push_str(&format!(
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
path = "{mark_a}"

{bad_filter}
"#,
        mark_a = filter("filter_mark_a").display(),
    ));
    text
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

fn callee(scratch: &Scratch, ports: PortBlock, calls: u32, checks: &HeaderChecks) -> Sipp {
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

fn caller(
    scratch: &Scratch,
    name: &'static str,
    ports: PortBlock,
    proxy: u16,
    calls: u32,
    xml: String,
) -> Sipp {
    Sipp::start(
        scratch,
        SippRole {
            name,
            scenario: scratch.write(&format!("{name}.xml"), &xml),
            transport: Transport::Udp,
            ports,
            remote: Some(proxy),
            calls,
            rate: Some(10),
            timeout: SIPP_TIMEOUT,
        },
    )
}

/// The values a check captured in a SIPp action log (`<variable>= <value>`).
fn captured(log: &str, variable: &str) -> Vec<String> {
    let marker = format!("{variable}=");
    log.lines()
        .filter_map(|line| {
            let start = line.find(&marker)? + marker.len();
            line[start..].split_whitespace().next().map(str::to_string)
        })
        .collect()
}

/// `cpu_limit_ms` is the bad tenant's budget: 20 ms for the loop; larger for
/// the others so that filling 16 MiB on a loaded machine is not cut short as
/// a timeout before it fails as out of memory.
fn contained(mode: &str, counter: &str, cpu_limit_ms: u32) {
    const CALLS: u32 = 20;
    let test = format!("filters_sipp_{mode}");
    let scratch = Scratch::new(&test);
    let proxy_ports = PortBlock::reserve(&test, 3);
    let (good, bad, admin) = (
        proxy_ports.port(0),
        proxy_ports.port(1),
        proxy_ports.port(2),
    );
    let callee_ports = PortBlock::reserve(&format!("{test}-callee"), 5);
    let callee_port = callee_ports.port(0);
    let bad_tenant = format!(
        r#"[[tenant]]
name = "bad"
listen = ["udp:127.0.0.1:{bad}"]
failure_policy = "fail-closed"
memory_limit_mib = 16
cpu_limit_ms = {cpu_limit_ms}
[[tenant.filter]]
path = "{}"
config = {{ mode = "{mode}", trigger = "always" }}
"#,
        filter("filter_misbehave").display()
    );
    let checks = HeaderChecks::new("invite")
        .matches("X-Filter-Version", 1, "^ *a$")
        .matches("Record-Route", 1, &record_route_regex(good));
    let mut callee = callee(&scratch, callee_ports, CALLS, &checks);
    let _siphost = Siphost::start(
        &scratch,
        &config(good, bad, admin, callee_port, &bad_tenant),
    );

    // Every call to the bad tenant is answered 500 by the fail-closed policy.
    let rejected = render(
        "sipp/uac_unreachable.xml",
        &[
            ("FINAL_STATUS", "500".to_string()),
            ("FINAL_CHECKS", HeaderChecks::new("rejected").xml()),
        ],
    );
    let mut bad_caller = caller(
        &scratch,
        "badcaller",
        PortBlock::reserve(&format!("{test}-bad"), 5),
        bad,
        CALLS,
        rejected,
    );
    let final_checks = HeaderChecks::new("final");
    let call = render("sipp/uac_call.xml", &[("FINAL_CHECKS", final_checks.xml())]);
    let mut good_caller = caller(
        &scratch,
        "goodcaller",
        PortBlock::reserve(&format!("{test}-good"), 5),
        good,
        CALLS,
        call,
    );

    good_caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    callee.assert_checked_every_call(&checks);
    bad_caller.assert_all_calls_succeeded();

    let status = rpc(admin, "filter.list", json!([]));
    let tenants = status["tenants"].as_array().expect("tenants");
    let bad_status = tenants
        .iter()
        .find(|t| t["name"] == json!("bad"))
        .expect("bad tenant");
    let good_status = tenants
        .iter()
        .find(|t| t["name"] == json!("good"))
        .expect("good tenant");
    let failures = bad_status["counters"][counter].as_u64().unwrap_or(0);
    assert!(
        failures >= u64::from(CALLS),
        "bad tenant {counter}: {failures}: {bad_status}"
    );
    for kind in ["timeouts", "traps", "out_of_memory"] {
        assert_eq!(
            good_status["counters"][kind],
            json!(0),
            "good tenant: {good_status}"
        );
    }
}

#[test]
fn endless_loop_is_contained_beside_a_healthy_tenant() {
    contained("loop", "timeouts", 20);
}

#[test]
fn trap_is_contained_beside_a_healthy_tenant() {
    contained("trap", "traps", 1000);
}

#[test]
fn out_of_memory_is_contained_beside_a_healthy_tenant() {
    contained("oom", "out_of_memory", 1000);
}

#[test]
fn panic_is_contained_beside_a_healthy_tenant() {
    contained("panic", "traps", 1000);
}

#[test]
fn hot_swap_ten_times_under_load_drops_no_call() {
    const CALLS: u32 = 60;
    let test = "filters_sipp_hot_swap";
    let scratch = Scratch::new(test);
    let proxy_ports = PortBlock::reserve(test, 3);
    let (good, bad, admin) = (
        proxy_ports.port(0),
        proxy_ports.port(1),
        proxy_ports.port(2),
    );
    let callee_ports = PortBlock::reserve(&format!("{test}-callee"), 5);
    let callee_port = callee_ports.port(0);
    let checks = HeaderChecks::new("invite")
        .matches("X-Filter-Version", 1, "^ *[ab]$")
        .matches("Record-Route", 1, &record_route_regex(good));
    let mut callee = callee(&scratch, callee_ports, CALLS, &checks);
    let _siphost = Siphost::start(&scratch, &config(good, bad, admin, callee_port, ""));
    let final_checks = HeaderChecks::new("final");
    let call = render("sipp/uac_call.xml", &[("FINAL_CHECKS", final_checks.xml())]);
    let mut caller = caller(
        &scratch,
        "caller",
        PortBlock::reserve(&format!("{test}-caller"), 5),
        good,
        CALLS,
        call,
    );

    // 60 calls at 10/s last 6 s: swap every 400 ms from 0.5 s on.
    let versions = [filter("filter_mark_b"), filter("filter_mark_a")];
    let mut swap_ms = Vec::new();
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..10 {
        let path = versions[i % 2].display().to_string();
        let report = rpc(admin, "filter.reload", json!(["good", path]));
        swap_ms.push(report["elapsed_ms"].as_f64().unwrap_or(f64::NAN));
        std::thread::sleep(Duration::from_millis(400));
    }

    caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    callee.assert_checked_every_call(&checks);
    let marks = captured(&callee.action_log(), "invitexfilterversion1");
    assert_eq!(marks.len(), CALLS as usize, "{marks:?}");
    assert!(
        marks.iter().any(|m| m == "a") && marks.iter().any(|m| m == "b"),
        "both versions must mark calls: {marks:?}"
    );
    let status = rpc(admin, "filter.list", json!([]));
    let good_status = status["tenants"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == json!("good")).cloned())
        .expect("good tenant");
    assert_eq!(good_status["counters"]["swaps"], json!(10), "{good_status}");
    eprintln!("swap latencies (ms): {swap_ms:?}");
}
