//! Filter runtime benchmark: a hook as the proxy submits it (a realistic INVITE,
//! the full context, run on the caller's thread once the tenant passed its
//! probation, or handed to the tenant's worker and back) with a no-op
//! filter (both ways), the uac filter passing through (it declares no hook, so no hand-off) and
//! the uac filter anonymizing, against no filter; instantiation, hot swap to a different component
//! (new bytes: compiled, or from a precompiled artifact), and resident memory of
//! 1,000 idle tenants. Criterion measures some; a percentile pass prints p50/p99.
//!
//! Build the filters first:
//! `cargo build --profile wasm --target wasm32-wasip2 -p filter-noop -p uac-filter`, then
//! `cargo bench -p siphost --bench runtime`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use siphost::proxy::hooks::NoFilters;
use siphost::runtime::config::{FailurePolicy, FilterConfig, TenantConfig};
use siphost::runtime::{EngineOptions, Runtime};
use siphost::sip::{Bytes, Message};

#[path = "invite.rs"]
mod invite;
use invite::{INVITE, hook};

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

fn filter_path(file: &str) -> PathBuf {
    let path = wasm_dir().join(file);
    assert!(
        path.exists(),
        "{} missing: cargo build --profile wasm --target wasm32-wasip2 -p filter-noop -p uac-filter",
        path.display()
    );
    path
}

fn noop_path() -> PathBuf {
    filter_path("filter_noop.wasm")
}

/// A tenant whose chain is the uac filter with this configuration.
fn uac_tenant(name: &str, port: u16, config: &str) -> TenantConfig {
    let mut t = tenant(name, port);
    t.filter = vec![FilterConfig {
        path: filter_path("uac_filter.wasm"),
        config: toml::from_str(config).expect("uac config"),
        watch_ms: None,
    }];
    t
}

/// examples/uac.toml's filter: no rules.
const UAC_PASS_THROUGH: &str = "";
/// examples/anonymize.toml's filter.
const UAC_ANONYMIZE: &str = r#"
restore_mode = "auto"
[[rule]]
on = "request"
when = 'is_method("INVITE") && !has_totag()'
do = ['uac_replace_from("\"Anonymous\"", "sip:anonymous@anonymous.invalid")']
"#;

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
        registrations: None,
        access: None,
        workers: 1,
        queue_limit: 1000,
        inline_hooks: true,
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

/// `noop.wasm` with a custom section naming `n`: a different component (other
/// bytes, other SHA-256) that behaves the same.
fn variant(noop: &[u8], n: usize, dir: &std::path::Path) -> PathBuf {
    fn leb(mut v: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"siphost-bench";
    let payload = n.to_le_bytes();
    let mut content = Vec::new();
    leb(name.len(), &mut content);
    content.extend_from_slice(name);
    content.extend_from_slice(&payload);
    let mut bytes = noop.to_vec();
    bytes.push(0);
    leb(content.len(), &mut bytes);
    bytes.extend_from_slice(&content);
    let path = dir.join(format!("noop-{n}.wasm"));
    std::fs::write(&path, bytes).expect("write variant");
    path
}

fn message() -> Message {
    Message::parse(Bytes::from_static(INVITE.as_bytes())).expect("INVITE parses")
}

fn bench_messages(c: &mut Criterion, rt: &Arc<Runtime>) {
    let mut group = c.benchmark_group("per_message");
    let mut msg = Some(message());
    group.bench_function("no_filter", |b| {
        b.iter(|| msg = Some(black_box(hook(&NoFilters, msg.take().expect("msg"), 5070))))
    });
    for (name, port) in [
        ("noop_filter", 5070),
        ("noop_filter_on_worker", 5073),
        ("uac_pass_through", 5071),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| msg = Some(black_box(hook(&**rt, msg.take().expect("msg"), port))))
        });
    }
    // A fresh INVITE each time (its parse included): anonymizing one twice is not a call.
    group.bench_function("uac_anonymize", |b| {
        b.iter(|| black_box(hook(&**rt, message(), 5072)))
    });
    group.finish();
    c.bench_function("instantiate_and_configure", |b| {
        b.iter(|| rt.restart("t").expect("restart"))
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
    let rt = runtime(&[
        tenant("t", 5070),
        uac_tenant("pass", 5071, UAC_PASS_THROUGH),
        uac_tenant("anon", 5072, UAC_ANONYMIZE),
        TenantConfig {
            inline_hooks: false,
            ..tenant("worker", 5073)
        },
    ]);
    let mut c = Criterion::default().configure_from_args();
    bench_messages(&mut c, &rt);
    c.final_summary();

    let mut msg = Some(message());
    percentiles(
        "on-request, no filter            ",
        sample(200_000, || {
            msg = Some(black_box(hook(&NoFilters, msg.take().expect("msg"), 5070)));
        }),
    );
    percentiles(
        "on-request, noop filter (inline)  ",
        sample(200_000, || {
            msg = Some(black_box(hook(&*rt, msg.take().expect("msg"), 5070)));
        }),
    );
    percentiles(
        "on-request, noop filter (hand-off)",
        sample(200_000, || {
            msg = Some(black_box(hook(&*rt, msg.take().expect("msg"), 5073)));
        }),
    );
    percentiles(
        "on-request, uac pass-through     ",
        sample(200_000, || {
            msg = Some(black_box(hook(&*rt, msg.take().expect("msg"), 5071)));
        }),
    );
    percentiles(
        "on-request, uac anonymize (+parse)",
        sample(20_000, || {
            black_box(hook(&*rt, message(), 5072));
        }),
    );
    percentiles(
        "instantiate + configure          ",
        sample(500, || {
            rt.restart("t").expect("restart");
        }),
    );
    // Swaps to components the engine has never seen (new bytes each time):
    // first compiled, then, in a fresh engine, from their precompiled artifacts.
    let noop = std::fs::read(noop_path()).expect("read noop");
    let dir = tempfile::tempdir().expect("tmp");
    let variants: Vec<PathBuf> = (0..20).map(|n| variant(&noop, n, dir.path())).collect();
    let swap_cache = dir.path().join("artifacts");
    let swapping = |cache: &std::path::Path| {
        let options = EngineOptions {
            max_instances: 100,
            max_memory_bytes: 64 << 20,
            cache_dir: Some(cache.to_path_buf()),
        };
        Runtime::new(&[tenant("t", 5070)], options).expect("runtime")
    };
    let compiling = swapping(&swap_cache);
    let mut next = variants.iter();
    percentiles(
        "hot swap, new component (compile)",
        sample(variants.len(), || {
            let path = next.next().expect("variant");
            let report = compiling.reload("t", Some(path), Some(0)).expect("swap");
            assert!(!report.from_cache);
        }),
    );
    drop(compiling);
    let loading = swapping(&swap_cache);
    let mut next = variants.iter();
    percentiles(
        "hot swap, new component (artifact)",
        sample(variants.len(), || {
            let path = next.next().expect("variant");
            let report = loading.reload("t", Some(path), Some(0)).expect("swap");
            assert!(report.from_cache);
        }),
    );
    drop(loading);
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
