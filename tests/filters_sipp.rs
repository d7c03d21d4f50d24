//! Filter runtime under SIPp load through a real siphost: misbehaving filters
//! (endless loop, trap, out of memory, panic) are contained by their tenant's
//! policy while a second tenant beside them completes every call; a tenant
//! looping on 40 requests/s leaves another tenant's 300 calls/s set-up time as
//! it was; a filter hot-swapped 10 times while calls are in flight drops no call.
//!
//! Needs the test filters built first (see tests/filters_runtime.rs).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    HeaderChecks, PortBlock, Scratch, Siphost, Sipp, SippRole, Transport, record_route_regex,
    render, sip_uri, siphost_proxy_config, wasm_filter,
};
use serde_json::{Value, json};

const SIPP_TIMEOUT: Duration = Duration::from_secs(60);

/// siphost on `good` (tenant "good", marking filter a) and `bad` (tenant
/// "bad", `bad_filter`), forwarding to the callee, admin on `admin`.
/// The tests of this file put real load on the machine, and the isolation test measures
/// set-up times: they run one at a time (a poisoned lock only means another test failed).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOAD.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
        mark_a = wasm_filter("filter_mark_a").display(),
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
    callee_from(scratch, ports, calls, callee_xml(checks))
}

fn callee_xml(checks: &HeaderChecks) -> String {
    render(
        "sipp/uas_call.xml",
        &[
            ("INVITE_CHECKS", checks.xml()),
            ("INVITE_RECORD_ROUTES", checks.resend_lines("Record-Route")),
        ],
    )
}

fn callee_from(scratch: &Scratch, ports: PortBlock, calls: u32, xml: String) -> Sipp {
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
    caller_at(scratch, name, ports, proxy, calls, 10, xml)
}

fn caller_at(
    scratch: &Scratch,
    name: &'static str,
    ports: PortBlock,
    proxy: u16,
    calls: u32,
    rate: u32,
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
            rate: Some(rate),
            timeout: SIPP_TIMEOUT,
        },
    )
}

/// SIPp actions that put the wall clock, in µs since the epoch, into `var`.
fn stamp(var: &str) -> String {
    format!(
        r#"<gettimeofday assign_to="{var},{var}_us"/><multiply assign_to="{var}" value="1000000"/><add assign_to="{var}" variable="{var}_us"/>"#
    )
}

/// The full-call caller scenario, logging per call `timing-setup <INVITE sent>
/// <200 received>` and `timing-call <INVITE sent> <BYE answered>` (µs since the epoch).
fn timed_call(final_checks: &HeaderChecks) -> String {
    let at_200 = format!(
        r#"{}{}<log message="timing-setup [$t_start] [$t_ok]"/>"#,
        final_checks.xml(),
        stamp("t_ok")
    );
    let xml = render("sipp/uac_call.xml", &[("FINAL_CHECKS", at_200)]);
    let xml = xml.replacen(
        "<send retrans=\"500\">",
        &format!(
            "<nop><action>{}</action></nop>\n  <send retrans=\"500\">",
            stamp("t_start")
        ),
        1,
    );
    let end = format!(
        r#"<nop><action>{}<log message="timing-call [$t_start] [$t_end]"/></action></nop>
  <ResponseTimeRepartition"#,
        stamp("t_end")
    );
    xml.replacen("<ResponseTimeRepartition", &end, 1)
}

/// The (start, end) pairs, in µs since the epoch, of the `timing-<kind>` lines.
fn timings(log: &str, kind: &str) -> Vec<(f64, f64)> {
    let marker = format!("timing-{kind} ");
    log.lines()
        .filter_map(|line| {
            let rest = &line[line.find(&marker)? + marker.len()..];
            let mut fields = rest.split_whitespace().map(|f| f.parse::<f64>().ok());
            Some((fields.next()??, fields.next()??))
        })
        .collect()
}

fn percentile(mut values: Vec<f64>, q: f64) -> f64 {
    assert!(!values.is_empty(), "no samples");
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
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
        wasm_filter("filter_misbehave").display()
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
    let _serial = one_at_a_time();
    contained("loop", "timeouts", 20);
}

#[test]
fn trap_is_contained_beside_a_healthy_tenant() {
    let _serial = one_at_a_time();
    contained("trap", "traps", 1000);
}

#[test]
fn out_of_memory_is_contained_beside_a_healthy_tenant() {
    let _serial = one_at_a_time();
    contained("oom", "out_of_memory", 1000);
}

#[test]
fn panic_is_contained_beside_a_healthy_tenant() {
    let _serial = one_at_a_time();
    contained("panic", "traps", 1000);
}

#[test]
fn hot_swap_ten_times_under_load_drops_no_call() {
    let _serial = one_at_a_time();
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
    let call = timed_call(&final_checks);
    let mut caller = caller(
        &scratch,
        "caller",
        PortBlock::reserve(&format!("{test}-caller"), 5),
        good,
        CALLS,
        call,
    );

    // 60 calls at 10/s last 6 s: swap every 400 ms once calls flow.
    let versions = [wasm_filter("filter_mark_b"), wasm_filter("filter_mark_a")];
    let mut swap_ms = Vec::new();
    let mut swapped_at = Vec::new();
    let epoch_us = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_micros() as f64
    };
    // The first swap waits until calls are under way (SIPp's start-up varies).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = rpc(admin, "filter.list", json!([]));
        let calls = status["tenants"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["name"] == json!("good")).cloned())
            .map_or(0, |t| t["counters"]["calls"].as_u64().unwrap_or(0));
        if calls >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no call reached the filter"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..10 {
        let path = versions[i % 2].display().to_string();
        let before = epoch_us();
        let report = rpc(admin, "filter.reload", json!(["good", path]));
        swapped_at.push((before, epoch_us()));
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
    // Calls (INVITE sent to BYE answered) were in flight all through each
    // swap RPC: the union of the call spans covers it.
    let mut calls = timings(&caller.action_log(), "call");
    assert_eq!(calls.len(), CALLS as usize, "timed calls");
    calls.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (i, &(from, to)) in swapped_at.iter().enumerate() {
        let mut covered_to = None::<f64>;
        for &(start, end) in &calls {
            match covered_to {
                None if start <= from && end >= from => covered_to = Some(end),
                Some(reach) if start <= reach => covered_to = Some(reach.max(end)),
                _ => {}
            }
        }
        assert!(
            covered_to.is_some_and(|reach| reach >= to),
            "swap {i} ({:.0} ms) was not covered by calls in flight",
            (to - from) / 1000.0
        );
    }
    eprintln!("swap latencies (ms): {swap_ms:?}");
}

/// One phase of tenant B's load: `calls` full calls at `rate`/s through
/// siphost's `good` socket; returns the set-up times (INVITE → 200) in ms.
fn healthy_load(
    scratch: &Scratch,
    phase: &'static str,
    good: u16,
    calls: u32,
    rate: u32,
) -> Vec<f64> {
    let mut caller = caller_at(
        scratch,
        phase,
        PortBlock::reserve(&format!("filters_sipp_isolation-{phase}"), 5),
        good,
        calls,
        rate,
        timed_call(&HeaderChecks::new("final")),
    );
    caller.assert_all_calls_succeeded();
    let setups: Vec<f64> = timings(&caller.action_log(), "setup")
        .into_iter()
        .map(|(start, ok)| (ok - start) / 1000.0)
        .collect();
    assert_eq!(setups.len(), calls as usize, "{phase}: timed set-ups");
    setups
}

/// Issue 7's isolation setup: tenant A's filter loops on each of 40
/// requests/s (burning its 20 ms CPU budget each time) while tenant B carries
/// 300 calls/s (50 in a debug build). B loses no call and its p90 set-up time
/// stays within 1.5× of B alone + 2 ms. Were B's messages queued behind A's
/// loops (80% of the time), most of B's calls would wait up to 20 ms and the
/// p90 would move by far more. The p99 is printed, not asserted: on two cores
/// it is the third-slowest of 250 calls, set by how the OS shares the core A
/// leaves with siphost and three SIPp peers (it moved between 12 and 21 ms
/// alone on one machine); `bench/isolation` measures the issue's p99 target
/// in a release build.
#[test]
fn a_looping_tenant_leaves_another_tenants_call_setup_time_as_it_was() {
    let _serial = one_at_a_time();
    // The issue's figures need an optimised siphost; an unoptimised one
    // carries B at 50 calls/s. A's load is the same in both. The environment
    // can set other figures; bench/isolation is the standalone bench.
    let knob = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .map(|v| v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}")))
            .unwrap_or(default)
    };
    let (default_rate, default_calls) = if cfg!(debug_assertions) {
        (50, 250)
    } else {
        (300, 1500)
    };
    let (rate, calls, bad_rate) = (
        knob("ISOLATION_RATE", default_rate),
        knob("ISOLATION_CALLS", default_calls),
        knob("ISOLATION_BAD_RATE", 40),
    );
    let test = "filters_sipp_isolation";
    let scratch = Scratch::new(test);
    let proxy_ports = PortBlock::reserve(test, 3);
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
cpu_limit_ms = 20
[[tenant.filter]]
path = "{}"
config = {{ mode = "loop", trigger = "always" }}
"#,
        wasm_filter("filter_misbehave").display()
    );
    let checks = HeaderChecks::new("invite")
        .matches("X-Filter-Version", 1, "^ *a$")
        .matches("Record-Route", 1, &record_route_regex(good));
    // Answered at once (no ringing pause), so set-up time is the proxy's part.
    let prompt = callee_xml(&checks).replacen("<pause milliseconds=\"100\"/>", "", 1);
    let mut callee = callee_from(&scratch, callee_ports, 2 * calls, prompt);
    let _siphost = Siphost::start(
        &scratch,
        &config(good, bad, admin, callee_port, &bad_tenant),
    );
    let alone = healthy_load(&scratch, "alone", good, calls, rate);

    // A's requests outlast B's second phase: 40/s for the whole of it.
    let bad_calls = bad_rate * (calls / rate + 3);
    let rejected = render(
        "sipp/uac_unreachable.xml",
        &[
            ("FINAL_STATUS", "500".to_string()),
            ("FINAL_CHECKS", HeaderChecks::new("rejected").xml()),
        ],
    );
    let mut bad_caller = caller_at(
        &scratch,
        "badcaller",
        PortBlock::reserve(&format!("{test}-bad"), 5),
        bad,
        bad_calls,
        bad_rate,
        rejected,
    );
    std::thread::sleep(Duration::from_secs(1));
    let beside = healthy_load(&scratch, "beside", good, calls, rate);
    bad_caller.assert_all_calls_succeeded();
    callee.assert_all_calls_succeeded();
    callee.assert_checked_every_call(&checks);

    let status = rpc(admin, "filter.list", json!([]));
    let bad_status = status["tenants"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == json!("bad")).cloned())
        .expect("bad tenant");
    let timeouts = bad_status["counters"]["timeouts"].as_u64().unwrap_or(0);
    assert!(timeouts >= u64::from(bad_calls), "bad tenant: {bad_status}");

    let (p90_alone, p90_beside) = (
        percentile(alone.clone(), 0.90),
        percentile(beside.clone(), 0.90),
    );
    let (p99_alone, p99_beside) = (percentile(alone, 0.99), percentile(beside, 0.99));
    eprintln!(
        "isolation: B {rate} calls/s x {calls}, A looping on {bad_rate} requests/s; \
         B p90 set-up alone {p90_alone:.2} ms, beside A {p90_beside:.2} ms (bound {:.2} ms); \
         p99 alone {p99_alone:.2} ms, beside A {p99_beside:.2} ms",
        1.5 * p90_alone + 2.0
    );
    assert!(
        p90_beside <= 1.5 * p90_alone + 2.0,
        "B's p90 set-up went from {p90_alone:.2} ms alone to {p90_beside:.2} ms"
    );
}
