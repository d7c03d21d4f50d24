//! proxy-wasm against the component model on the same work: the example
//! proxy-wasm filter (`X-Proxy-Wasm: hello` on every request) and the same logic
//! as a component (tests/filters/stamp), each alone in a tenant's chain, called
//! as the relay calls a hook on a realistic INVITE (the context, the hand-off to
//! the tenant's worker and back); no filter as the baseline. Criterion runs
//! each alone; then an interleaved pass alternates the two filters call by
//! call, so both meet the same machine load, and prints p50/p99 of each.
//!
//! Build the filters first:
//! `cargo build --profile wasm --target wasm32-wasip1 -p proxy-wasm-filter`,
//! `cargo build --profile wasm --target wasm32-wasip2 -p filter-stamp`, then
//! `cargo bench -p siphost --bench proxy_wasm`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use siphost::proxy::hooks::NoFilters;
use siphost::runtime::config::{FailurePolicy, FilterConfig, TenantConfig};
use siphost::runtime::{EngineOptions, Runtime};
use siphost::sip::{Bytes, Message};

#[path = "invite.rs"]
mod invite;
use invite::hook;

/// Tenant ports: one tenant per ABI, so both run in one runtime.
const COMPONENT_PORT: u16 = 5071;
const PROXY_WASM_PORT: u16 = 5072;

fn wasm(target: &str, name: &str, package: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("bench binary path");
    let path = exe
        .ancestors()
        .nth(3)
        .expect("target dir")
        .join(target)
        .join("wasm")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} missing: cargo build --profile wasm --target {target} -p {package}",
        path.display()
    );
    path
}

fn tenant(name: &str, port: u16, filter: PathBuf) -> TenantConfig {
    TenantConfig {
        name: name.to_string(),
        listen: vec![format!("udp:127.0.0.1:{port}")],
        failure_policy: FailurePolicy::FailOpen,
        memory_limit_mib: 16,
        cpu_limit_ms: 20,
        filter: vec![FilterConfig {
            path: filter,
            config: toml::Table::new(),
            watch_ms: None,
        }],
        registrations: None,
        access: None,
        workers: 1,
        queue_limit: 1000,
        inline_hooks: true,
    }
}

fn main() {
    let tenants = [
        tenant(
            "component",
            COMPONENT_PORT,
            wasm("wasm32-wasip2", "filter_stamp", "filter-stamp"),
        ),
        tenant(
            "proxy-wasm",
            PROXY_WASM_PORT,
            wasm("wasm32-wasip1", "proxy_wasm_filter", "proxy-wasm-filter"),
        ),
    ];
    let options = EngineOptions {
        max_instances: 64,
        max_memory_bytes: 64 << 20,
        cache_dir: None,
    };
    let rt: Arc<Runtime> = Runtime::new(&tenants, options).expect("runtime");
    let invite = Message::parse(Bytes::from_static(invite::INVITE.as_bytes())).expect("INVITE");
    // Both do the work being compared: the same header on the same message.
    for port in [COMPONENT_PORT, PROXY_WASM_PORT] {
        let stamped = hook(&*rt, invite.clone(), port);
        assert_eq!(stamped.header("X-Proxy-Wasm"), Some("hello"), "port {port}");
        assert_eq!(stamped.headers("Via").count(), 2, "port {port}");
    }

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("add_header");
    let fresh = || invite.clone();
    group.bench_function("no_filter", |b| {
        b.iter_batched(
            fresh,
            |msg| black_box(hook(&NoFilters, msg, COMPONENT_PORT)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("component", |b| {
        b.iter_batched(
            fresh,
            |msg| black_box(hook(&*rt, msg, COMPONENT_PORT)),
            BatchSize::SmallInput,
        )
    });
    group.bench_function("proxy_wasm", |b| {
        b.iter_batched(
            fresh,
            |msg| black_box(hook(&*rt, msg, PROXY_WASM_PORT)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
    c.final_summary();

    const SAMPLES: usize = 100_000;
    let mut component = Vec::with_capacity(SAMPLES);
    let mut proxy_wasm = Vec::with_capacity(SAMPLES);
    let timed = |port: u16, into: &mut Vec<Duration>| {
        let msg = invite.clone();
        let started = Instant::now();
        black_box(hook(&*rt, msg, port));
        into.push(started.elapsed());
    };
    for _ in 0..SAMPLES {
        timed(COMPONENT_PORT, &mut component);
        timed(PROXY_WASM_PORT, &mut proxy_wasm);
    }
    let p50_component = percentiles("interleaved, component ", component);
    let p50_proxy_wasm = percentiles("interleaved, proxy-wasm", proxy_wasm);
    println!(
        "interleaved p50 ratio proxy-wasm / component: {:.2}",
        p50_proxy_wasm.as_secs_f64() / p50_component.as_secs_f64()
    );
}

/// Prints p50 and p99 of `samples`; returns the p50.
fn percentiles(label: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!(
        "{label}: p50 {:.2} µs, p99 {:.2} µs ({} samples)",
        at(0.50).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
        samples.len()
    );
    at(0.50)
}
