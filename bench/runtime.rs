//! Filter runtime benchmark: per-message overhead of a no-op filter against no
//! filter, instantiation, hot swap with a precompiled artifact, and resident
//! memory of 1,000 idle tenants. Criterion measures the first three; a
//! percentile pass prints p50/p99 and the RSS figure.
//!
//! Build the filters first:
//! `cargo build --profile wasm --target wasm32-wasip2 -p filter-noop`, then
//! `cargo bench -p siphost --bench runtime`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use siphost::proxy::hooks::{CallBlocking, HookContext, NoFilters};
use siphost::runtime::config::{FailurePolicy, FilterConfig, TenantConfig};
use siphost::runtime::{EngineOptions, Runtime};
use siphost::sip::{Bytes, Message};

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKbench\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\nCall-ID: bench@test\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:alice@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n";

fn wasm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SIPHOST_FILTER_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("bench binary path");
    exe.ancestors()
        .nth(3)
        .expect("target dir")
        .join("wasm32-wasip2")
        .join("wasm")
}

fn noop_path() -> PathBuf {
    let path = wasm_dir().join("filter_noop.wasm");
    assert!(
        path.exists(),
        "{} missing: cargo build --profile wasm --target wasm32-wasip2 -p filter-noop",
        path.display()
    );
    path
}

fn cache_dir() -> PathBuf {
    wasm_dir().join("bench-artifact-cache")
}

fn tenant(name: &str, port: u16) -> TenantConfig {
    TenantConfig {
        name: name.to_string(),
        listen: vec![format!("udp:127.0.0.1:{port}")],
        failure_policy: FailurePolicy::FailOpen,
        memory_limit_mib: 16,
        cpu_limit_ms: 20,
        filter: vec![FilterConfig {
            path: noop_path(),
            config: toml::Table::new(),
            watch_ms: None,
        }],
        access: None,
    }
}

fn runtime(tenants: &[TenantConfig]) -> Arc<Runtime> {
    let options = EngineOptions {
        max_instances: 2500,
        max_memory_bytes: 64 << 20,
        cache_dir: Some(cache_dir()),
    };
    Runtime::new(tenants, options).expect("runtime")
}

fn ctx(port: u16) -> HookContext {
    HookContext {
        transport: "udp",
        source: "127.0.0.1:5999".parse().expect("addr"),
        local: SocketAddr::from(([127, 0, 0, 1], port)),
        next_hop: None,
        dialog_key: Some("bench@test".into()),
        transaction_key: "z9hG4bKbench".into(),
        record_route_params: None,
        own_route: None,
        endpoint: None,
    }
}

fn message() -> Message {
    Message::parse(Bytes::from_static(INVITE.as_bytes())).expect("INVITE parses")
}

fn bench_messages(c: &mut Criterion, rt: &Arc<Runtime>) {
    let mut group = c.benchmark_group("per_message");
    let mut msg = message();
    group.bench_function("no_filter", |b| {
        b.iter(|| black_box(NoFilters.request_blocking(&mut ctx(5070), &mut msg)))
    });
    group.bench_function("noop_filter", |b| {
        b.iter(|| black_box(rt.request_blocking(&mut ctx(5070), &mut msg)))
    });
    group.finish();
    c.bench_function("instantiate_and_configure", |b| {
        b.iter(|| rt.restart("t").expect("restart"))
    });
    c.bench_function("hot_swap_precompiled", |b| {
        b.iter(|| rt.reload("t", None, None).expect("swap"))
    });
}

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{label}: p50 {:.2} µs, p99 {:.2} µs ({} samples)",
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        samples.len()
    );
}

fn sample(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let rt = runtime(&[tenant("t", 5070)]);
    let mut c = Criterion::default().configure_from_args();
    bench_messages(&mut c, &rt);
    c.final_summary();

    let mut msg = message();
    percentiles(
        "per message, no filter  ",
        sample(200_000, || {
            black_box(NoFilters.request_blocking(&mut ctx(5070), &mut msg));
        }),
    );
    percentiles(
        "per message, noop filter",
        sample(200_000, || {
            black_box(rt.request_blocking(&mut ctx(5070), &mut msg));
        }),
    );
    percentiles(
        "instantiate + configure ",
        sample(500, || {
            rt.restart("t").expect("restart");
        }),
    );
    percentiles(
        "hot swap (precompiled)  ",
        sample(200, || {
            rt.reload("t", None, None).expect("swap");
        }),
    );
    drop(rt);

    const TENANTS: u16 = 1000;
    let configs: Vec<TenantConfig> = (0..TENANTS)
        .map(|i| tenant(&format!("t{i}"), 20000 + i))
        .collect();
    // The engine and one tenant first, so the figure is the per-tenant cost.
    let base = runtime(&configs[..1]);
    let before = rss_kib();
    let started = Instant::now();
    let many = runtime(&configs[1..]);
    let elapsed = started.elapsed();
    let after = rss_kib();
    println!(
        "{} idle tenants: RSS +{} KiB = {:.1} KiB per tenant (built in {:.0} ms)",
        TENANTS - 1,
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / f64::from(TENANTS - 1),
        elapsed.as_secs_f64() * 1000.0
    );
    drop((base, many));
}
