//! proxy-wasm (ABI 0.2.1) filters in a tenant's chain: the example SDK filter
//! edits and refuses SIP requests, beside component filters, hot swapped.
//!
//! Needs the filters built first:
//! `cargo build --profile wasm --target wasm32-wasip1 -p proxy-wasm-filter` and
//! `cargo build --profile wasm --target wasm32-wasip2 -p filter-noop -p filter-mark-a`

use std::net::SocketAddr;
use std::path::PathBuf;

use siphost::proxy::hooks::{CallBlocking, Decision, HookContext};
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

fn runtime(filters: Vec<FilterConfig>) -> std::sync::Arc<Runtime> {
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

#[test]
fn blocked_user_agent_gets_403() {
    let rt = runtime(vec![filter(proxy_wasm_filter())]);
    let mut msg = invite("User-Agent: blocked-agent\r\n");
    match rt.request_blocking(&mut ctx(), &mut msg) {
        Decision::Reply {
            code,
            reason,
            headers,
        } => {
            assert_eq!((code, reason.as_str()), (403, "Forbidden"));
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
