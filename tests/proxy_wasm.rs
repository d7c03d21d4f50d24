//! proxy-wasm (ABI 0.2.1) filters in a tenant's chain: the example SDK filter
//! edits and refuses SIP requests, beside component filters, hot swapped; a
//! misbehaving module meets the tenant's limits and failure policy; shared
//! queues wake the registering VM; local replies carry a body.
//!
//! Needs the filters built first:
//! `cargo build --profile wasm --target wasm32-wasip1 -p proxy-wasm-filter -p proxy-wasm-probe`,
//! `cargo build --profile wasm --target wasm32-unknown-unknown -p proxy-wasm-filter` and
//! `cargo build --profile wasm --target wasm32-wasip2 -p filter-noop -p filter-mark-a`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use siphost::proxy::hooks::{
    CallBlocking, Decision, FilterHooks, HookCall, HookContext, Submitted,
};
use siphost::runtime::config::{FailurePolicy, FilterConfig, TenantConfig};
use siphost::runtime::{EngineOptions, Runtime};
use siphost::sip::{Bytes, Message};

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

fn wasm(target: &str, name: &str) -> PathBuf {
    let path = target_dir()
        .join(target)
        .join("wasm")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} missing: build the filters first",
        path.display()
    );
    path
}

fn proxy_wasm_filter() -> PathBuf {
    wasm("wasm32-wasip1", "proxy_wasm_filter")
}

/// The test module: misbehaves per its plugin configuration, probes queues,
/// local replies with a body and HTTP calls (tests/filters-proxy-wasm/probe).
fn probe() -> PathBuf {
    wasm("wasm32-wasip1", "proxy_wasm_probe")
}

fn probe_filter(plugin_config: &str) -> FilterConfig {
    let mut config = toml::Table::new();
    config.insert("plugin_config".into(), plugin_config.into());
    FilterConfig {
        path: probe(),
        config,
        watch_ms: None,
    }
}

fn filter(path: PathBuf) -> FilterConfig {
    FilterConfig {
        path,
        config: toml::Table::new(),
        watch_ms: None,
    }
}

fn tenant(filters: Vec<FilterConfig>) -> TenantConfig {
    TenantConfig {
        name: "pw".to_string(),
        listen: vec!["udp:127.0.0.1:5080".to_string()],
        failure_policy: FailurePolicy::FailOpen,
        memory_limit_mib: 16,
        cpu_limit_ms: 20,
        filter: filters,
        workers: 1,
        queue_limit: 1000,
        access: None,
        registrations: None,
    }
}

fn runtime(filters: Vec<FilterConfig>) -> Arc<Runtime> {
    let options = EngineOptions {
        max_instances: 64,
        max_memory_bytes: 64 << 20,
        cache_dir: None,
    };
    Runtime::new(&[tenant(filters)], options).expect("runtime")
}

fn ctx() -> HookContext {
    HookContext {
        transport: "udp",
        source: "127.0.0.1:5999".parse().expect("addr"),
        local: SocketAddr::from(([127, 0, 0, 1], 5080)),
        next_hop: None,
        dialog_key: None,
        transaction_key: "z9hG4bKtest".to_string(),
        record_route_params: None,
        own_route: None,
        endpoint: None,
    }
}

fn invite(extra: &str) -> Message {
    let text = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKtest\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKfirst\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1@test\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).expect("test INVITE parses")
}

#[test]
fn sdk_filter_stamps_requests_and_keeps_header_order() {
    let rt = runtime(vec![filter(proxy_wasm_filter())]);
    let mut msg = invite("User-Agent: softphone\r\n");
    assert_eq!(
        rt.request_blocking(&mut ctx(), &mut msg),
        Decision::Continue
    );
    assert_eq!(msg.header("X-Proxy-Wasm"), Some("hello"));
    let vias: Vec<&str> = msg.headers("Via").collect();
    assert_eq!(vias.len(), 2, "{vias:?}");
    assert!(vias[0].contains("z9hG4bKtest") && vias[1].contains("z9hG4bKfirst"));
    assert_eq!(msg.request_uri(), Some("sip:bob@example.com"));
    assert_eq!(msg.header("Call-ID"), Some("c1@test"));
}

/// Without WASI: the same SDK filter built for wasm32-unknown-unknown imports
/// only `env` and runs the same.
#[test]
fn the_example_built_for_wasm32_unknown_unknown_runs_too() {
    let rt = runtime(vec![filter(wasm(
        "wasm32-unknown-unknown",
        "proxy_wasm_filter",
    ))]);
    let mut msg = invite("User-Agent: softphone\r\n");
    assert_eq!(
        rt.request_blocking(&mut ctx(), &mut msg),
        Decision::Continue
    );
    assert_eq!(msg.header("X-Proxy-Wasm"), Some("hello"));
    let mut blocked = invite("User-Agent: blocked-agent\r\n");
    assert!(matches!(
        rt.request_blocking(&mut ctx(), &mut blocked),
        Decision::Reply { code: 403, .. }
    ));
}

#[test]
fn blocked_user_agent_gets_403() {
    let rt = runtime(vec![filter(proxy_wasm_filter())]);
    let mut msg = invite("User-Agent: blocked-agent\r\n");
    match rt.request_blocking(&mut ctx(), &mut msg) {
        Decision::Reply {
            code,
            reason,
            headers,
            body,
        } => {
            assert_eq!((code, reason.as_str()), (403, "Forbidden"));
            assert!(body.is_empty());
            assert!(headers.contains(&("x-blocked-by".to_string(), "proxy-wasm".to_string())));
        }
        other => panic!("expected a 403, got {other:?}"),
    }
    assert_eq!(msg.header("X-Proxy-Wasm"), None);
}

#[test]
fn runs_beside_a_component_filter_and_swaps_with_one() {
    let noop = wasm("wasm32-wasip2", "filter_noop");
    let rt = runtime(vec![filter(noop), filter(proxy_wasm_filter())]);
    let mut msg = invite("");
    assert_eq!(
        rt.request_blocking(&mut ctx(), &mut msg),
        Decision::Continue
    );
    assert_eq!(msg.header("X-Proxy-Wasm"), Some("hello"));

    // Hot swap across ABIs: the proxy-wasm slot becomes a component and back.
    let mark_a = wasm("wasm32-wasip2", "filter_mark_a");
    rt.reload("pw", Some(&mark_a), Some(1))
        .expect("swap to a component");
    let mut msg = invite("");
    rt.request_blocking(&mut ctx(), &mut msg);
    assert_eq!(msg.header("X-Proxy-Wasm"), None);
    assert_eq!(msg.header("X-Filter-Version"), Some("a"));
    rt.reload("pw", Some(&proxy_wasm_filter()), Some(1))
        .expect("swap back to proxy-wasm");
    let mut msg = invite("");
    rt.request_blocking(&mut ctx(), &mut msg);
    assert_eq!(msg.header("X-Proxy-Wasm"), Some("hello"));
}

#[test]
fn the_tenant_memory_limit_binds_proxy_wasm_modules() {
    // The module's own initial memory (stack and data, over 1 MiB for a
    // wasip1 std build) does not fit in a 1 MiB tenant: refused at load.
    let mut config = tenant(vec![filter(proxy_wasm_filter())]);
    config.memory_limit_mib = 1;
    let options = EngineOptions {
        max_instances: 64,
        max_memory_bytes: 64 << 20,
        cache_dir: None,
    };
    let err = Runtime::new(&[config], options)
        .err()
        .expect("over the limit");
    let text = err.to_string();
    assert!(
        text.contains("memory") || text.contains("limit"),
        "unexpected error: {text}"
    );
}

/// Tenant `name` on `port` with the probe module in `plugin_config` mode.
fn probe_tenant(name: &str, port: u16, policy: FailurePolicy, mode: &str) -> TenantConfig {
    let mut t = tenant(vec![probe_filter(mode)]);
    t.name = name.to_string();
    t.listen = vec![format!("udp:127.0.0.1:{port}")];
    t.failure_policy = policy;
    t
}

fn runtime_of(tenants: &[TenantConfig]) -> Arc<Runtime> {
    let options = EngineOptions {
        max_instances: 64,
        max_memory_bytes: 64 << 20,
        cache_dir: None,
    };
    Runtime::new(tenants, options).expect("runtime")
}

fn ctx_on(port: u16) -> HookContext {
    let mut c = ctx();
    c.local = SocketAddr::from(([127, 0, 0, 1], port));
    c
}

fn counter(rt: &Runtime, tenant: &str, name: &str) -> u64 {
    let status = rt.status();
    let tenants = status["tenants"].as_array().expect("tenants");
    let t = tenants
        .iter()
        .find(|t| t["name"] == json!(tenant))
        .expect("tenant");
    t["counters"][name].as_u64().expect("counter")
}

/// A clean request is served by a fresh VM: its call count starts at 1 again,
/// which only a new instance's memory does.
fn assert_fresh_instance_serves(rt: &Runtime, port: u16) {
    let mut good = invite("");
    assert_eq!(
        rt.request_blocking(&mut ctx_on(port), &mut good),
        Decision::Continue
    );
    assert_eq!(good.header("X-Probe-Calls"), Some("1"));
}

#[test]
fn an_endless_loop_in_on_request_headers_is_stopped_by_the_cpu_limit() {
    let mut t = probe_tenant("bad", 5080, FailurePolicy::FailClosed, "loop");
    t.cpu_limit_ms = 20;
    let rt = runtime_of(&[t]);
    let started = Instant::now();
    let decision = rt.request_blocking(&mut ctx_on(5080), &mut invite("X-Misbehave: yes\r\n"));
    let elapsed = started.elapsed();
    assert!(
        matches!(decision, Decision::Reply { code: 500, .. }),
        "{decision:?}"
    );
    // 20 ms of CPU; the bound leaves room for a loaded test machine.
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(counter(&rt, "bad", "timeouts"), 1);
    assert_fresh_instance_serves(&rt, 5080);
}

#[test]
fn a_trap_fail_open_undoes_the_edits_and_replaces_the_instance() {
    let rt = runtime_of(&[probe_tenant("bad", 5080, FailurePolicy::FailOpen, "trap")]);
    // Two calls on the first VM, so the fresh one's count tells them apart.
    for expected in ["1", "2"] {
        let mut msg = invite("");
        rt.request_blocking(&mut ctx_on(5080), &mut msg);
        assert_eq!(msg.header("X-Probe-Calls"), Some(expected));
    }
    let mut bad = invite("X-Misbehave: yes\r\n");
    let before = bad.to_bytes();
    assert_eq!(
        rt.request_blocking(&mut ctx_on(5080), &mut bad),
        Decision::Continue
    );
    assert_eq!(
        bad.to_bytes(),
        before,
        "fail-open must undo the module's edits"
    );
    assert_eq!(counter(&rt, "bad", "traps"), 1);
    assert_fresh_instance_serves(&rt, 5080);
}

#[test]
fn a_trap_fail_closed_answers_500() {
    let rt = runtime_of(&[probe_tenant("bad", 5080, FailurePolicy::FailClosed, "trap")]);
    match rt.request_blocking(&mut ctx_on(5080), &mut invite("X-Misbehave: yes\r\n")) {
        Decision::Reply { code, .. } => assert_eq!(code, 500),
        other => panic!("expected a 500, got {other:?}"),
    }
    assert_eq!(counter(&rt, "bad", "traps"), 1);
    assert_fresh_instance_serves(&rt, 5080);
}

#[test]
fn growing_memory_past_the_tenant_limit_fails_as_out_of_memory() {
    let mut t = probe_tenant("bad", 5080, FailurePolicy::FailOpen, "oom");
    // Filling 16 MiB must not be cut short as a time-out on a loaded machine.
    t.cpu_limit_ms = 5000;
    let rt = runtime_of(&[t]);
    let mut bad = invite("X-Misbehave: yes\r\n");
    assert_eq!(
        rt.request_blocking(&mut ctx_on(5080), &mut bad),
        Decision::Continue
    );
    assert_eq!(bad.header("X-Probe-Touched"), None);
    assert_eq!(counter(&rt, "bad", "out_of_memory"), 1, "{}", rt.status());
    assert_eq!(counter(&rt, "bad", "traps"), 0);
    assert_fresh_instance_serves(&rt, 5080);
}

#[test]
fn a_looping_module_does_not_hold_up_another_tenant() {
    let mut slow = probe_tenant("slow", 5080, FailurePolicy::FailOpen, "loop");
    slow.cpu_limit_ms = 1000;
    let mut quick = tenant(vec![filter(proxy_wasm_filter())]);
    quick.name = "quick".into();
    quick.listen = vec!["udp:127.0.0.1:5081".into()];
    let rt = runtime_of(&[slow, quick]);
    let (tx, looping) = std::sync::mpsc::channel();
    let submitted = rt.submit(
        HookCall::Request {
            ctx: ctx_on(5080),
            msg: invite("X-Misbehave: yes\r\n"),
        },
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    );
    assert!(matches!(submitted, Submitted::Queued), "{submitted:?}");
    for _ in 0..20 {
        let mut msg = invite("");
        assert_eq!(
            rt.request_blocking(&mut ctx_on(5081), &mut msg),
            Decision::Continue
        );
        assert_eq!(msg.header("X-Proxy-Wasm"), Some("hello"));
    }
    assert!(
        looping.try_recv().is_err(),
        "the looping call must still run while the other tenant is served"
    );
    let result = looping
        .recv_timeout(Duration::from_secs(30))
        .expect("the loop is stopped");
    assert_eq!(result.decision, Decision::Continue);
    assert_eq!(counter(&rt, "slow", "timeouts"), 1);
    assert_eq!(counter(&rt, "quick", "timeouts"), 0);
}

#[test]
fn an_enqueued_item_wakes_the_registering_vm_with_on_queue_ready() {
    let a = probe_tenant("a", 5080, FailurePolicy::FailClosed, "none");
    let b = probe_tenant("b", 5081, FailurePolicy::FailClosed, "none");
    let rt = runtime_of(&[a, b]);
    let mut first = invite("X-Enqueue: one\r\n");
    rt.request_blocking(&mut ctx_on(5080), &mut first);
    assert_eq!(first.header("X-Enqueued"), Some("ok"));
    // The hook that enqueued ran before on_queue_ready: nothing seen yet.
    assert_eq!(first.header("X-Queue-Ready"), None);
    // on_queue_ready was queued on the worker before this call, so it ran first.
    let mut second = invite("X-Enqueue: two\r\n");
    rt.request_blocking(&mut ctx_on(5080), &mut second);
    assert_eq!(second.header("X-Queue-Ready"), Some("one"));
    let mut third = invite("");
    rt.request_blocking(&mut ctx_on(5080), &mut third);
    assert_eq!(third.header("X-Queue-Ready"), Some("one,two"));
    // Queues and shared data are per tenant: b's queue of the same name is
    // empty and its VM was never woken.
    let mut other = invite("");
    rt.request_blocking(&mut ctx_on(5081), &mut other);
    assert_eq!(other.header("X-Queue-Ready"), None);
    assert_eq!(counter(&rt, "a", "traps"), 0);
}

#[test]
fn send_local_response_with_a_body_makes_a_reply_with_that_body() {
    let rt = runtime_of(&[probe_tenant("a", 5080, FailurePolicy::FailClosed, "none")]);
    let mut msg = invite("X-Reply-Body: {\"busy\":true}\r\nX-Reply-Type: application/json\r\n");
    match rt.request_blocking(&mut ctx_on(5080), &mut msg) {
        Decision::Reply {
            code,
            headers,
            body,
            ..
        } => {
            assert_eq!(code, 486);
            assert_eq!(&body[..], br#"{"busy":true}"#);
            assert!(
                headers.contains(&("content-type".into(), "application/json".into())),
                "{headers:?}"
            );
        }
        other => panic!("expected a 486 with a body, got {other:?}"),
    }
    // Without a Content-Type from the module the body is text/plain.
    let mut msg = invite("X-Reply-Body: busy until 5\r\n");
    match rt.request_blocking(&mut ctx_on(5080), &mut msg) {
        Decision::Reply { headers, body, .. } => {
            assert_eq!(&body[..], b"busy until 5");
            assert!(
                headers.contains(&("Content-Type".into(), "text/plain".into())),
                "{headers:?}"
            );
        }
        other => panic!("expected a 486 with a body, got {other:?}"),
    }
}

#[test]
fn an_http_call_sip_cannot_make_is_an_error_value_not_a_trap() {
    let rt = runtime_of(&[probe_tenant("a", 5080, FailurePolicy::FailClosed, "none")]);
    let mut msg = invite("X-Http-Call: yes\r\n");
    assert_eq!(
        rt.request_blocking(&mut ctx_on(5080), &mut msg),
        Decision::Continue
    );
    assert_eq!(msg.header("X-Http-Call-Result"), Some("refused"));
    assert_eq!(counter(&rt, "a", "traps"), 0);
}
