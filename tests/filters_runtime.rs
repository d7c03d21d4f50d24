//! In-process tests of the filter runtime (no proxy, no network): each
//! failure policy outcome, re-instantiation, hot swap, tenant isolation,
//! timers, originated requests and the artifact cache.
//!
//! Needs the test filters built first:
//! `cargo build --profile wasm --target wasm32-wasip2 -p uac-filter -p filter-noop -p filter-misbehave -p filter-mark-a -p filter-mark-b`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use siphost::proxy::hooks::{CallBlocking, Decision, HookContext};
use siphost::runtime::config::{FailurePolicy, FilterConfig, TenantConfig};
use siphost::runtime::{
    BoxFuture, EngineOptions, FilterError, RequestSender, Runtime, SendFailure,
};
use siphost::sip::{Bytes, Message};

/// Directory of the wasm test filters: `$SIPHOST_FILTER_DIR`, else
/// `<target>/wasm32-wasip2/wasm` next to this test binary's target dir.
fn filter_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SIPHOST_FILTER_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/debug/deps/<test> → <target>
    let target = exe.ancestors().nth(3).expect("target dir").to_path_buf();
    target.join("wasm32-wasip2").join("wasm")
}

fn filter(name: &str) -> PathBuf {
    let path = filter_dir().join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} missing: build the test filters first (cargo build --profile wasm --target wasm32-wasip2 -p uac-filter -p filter-noop -p filter-misbehave -p filter-mark-a -p filter-mark-b)",
        path.display()
    );
    path
}

fn filter_config(path: &Path, config: serde_json::Value) -> FilterConfig {
    let table: toml::Table = serde_json::from_value(config).expect("config table");
    FilterConfig {
        path: path.to_path_buf(),
        config: table,
        watch_ms: None,
    }
}

fn tenant(
    name: &str,
    port: u16,
    policy: FailurePolicy,
    filters: Vec<FilterConfig>,
) -> TenantConfig {
    TenantConfig {
        name: name.to_string(),
        listen: vec![format!("udp:127.0.0.1:{port}")],
        failure_policy: policy,
        memory_limit_mib: 16,
        cpu_limit_ms: 20,
        filter: filters,
        access: None,
    }
}

/// Artifact cache shared by the tests (compiling in a debug build is slow);
/// the cache test uses its own empty directory.
fn shared_cache() -> PathBuf {
    filter_dir().join("test-artifact-cache")
}

fn options(cache: &Path) -> EngineOptions {
    EngineOptions {
        max_instances: 64,
        max_memory_bytes: 64 << 20,
        cache_dir: Some(cache.to_path_buf()),
    }
}

fn ctx(port: u16, dialog: Option<&str>) -> HookContext {
    HookContext {
        transport: "udp",
        source: "127.0.0.1:5999".parse().expect("addr"),
        local: SocketAddr::from(([127, 0, 0, 1], port)),
        next_hop: None,
        dialog_key: dialog.map(str::to_string),
        transaction_key: "z9hG4bKtest".to_string(),
        record_route_params: None,
        own_route: None,
        endpoint: None,
    }
}

fn invite(extra: &str) -> Message {
    let text = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKtest\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1@test\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).expect("test INVITE parses")
}

fn reply(status: u16, extra: &str) -> Message {
    let text = format!(
        "SIP/2.0 {status} Whatever\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKtest\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\nCall-ID: c1@test\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
    );
    Message::parse(Bytes::from(text)).expect("test reply parses")
}

fn counter(runtime: &Runtime, tenant: &str, name: &str) -> u64 {
    let status = runtime.status();
    let tenants = status["tenants"].as_array().expect("tenants");
    let t = tenants
        .iter()
        .find(|t| t["name"] == json!(tenant))
        .expect("tenant");
    t["counters"][name].as_u64().expect("counter")
}

/// A clean request after a failure is served by a new instance: the filter's call counter
/// starts again at 1, which only a re-instantiated store does.
fn assert_fresh_instance_serves(rt: &Runtime) {
    let mut good = invite("");
    assert_eq!(
        rt.request_blocking(&mut ctx(5070, None), &mut good),
        Decision::Continue
    );
    assert_eq!(good.header("X-Misbehave-Calls"), Some("1"));
}

fn misbehaving(mode: &str, policy: FailurePolicy, cpu_limit_ms: u32) -> Arc<Runtime> {
    let f = filter_config(&filter("filter_misbehave"), json!({"mode": mode}));
    let mut t = tenant("bad", 5070, policy, vec![f]);
    t.cpu_limit_ms = cpu_limit_ms;
    Runtime::new(&[t], options(&shared_cache())).expect("runtime")
}

#[test]
fn noop_filter_passes_messages_untouched() {
    let cache = shared_cache();
    let f = filter_config(&filter("filter_noop"), json!({}));
    let rt = Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, vec![f])],
        options(&cache),
    )
    .expect("runtime");
    let mut msg = invite("");
    let before = msg.to_bytes();
    assert_eq!(
        rt.request_blocking(&mut ctx(5070, None), &mut msg),
        Decision::Continue
    );
    assert_eq!(msg.to_bytes(), before);
    let mut r = reply(200, "");
    assert_eq!(
        rt.reply_blocking(&mut ctx(5070, None), &mut r),
        Decision::Continue
    );
    // Traffic on a socket no tenant owns never reaches a filter.
    assert_eq!(
        rt.request_blocking(&mut ctx(5999, None), &mut msg),
        Decision::Continue
    );
    assert_eq!(counter(&rt, "t", "calls"), 2);
}

#[test]
fn trap_fail_open_restores_the_message_and_reinstantiates() {
    let rt = misbehaving("trap", FailurePolicy::FailOpen, 20);
    assert_fresh_instance_serves(&rt);

    let mut bad = invite("X-Misbehave: yes\r\n");
    let before = bad.to_bytes();
    assert_eq!(
        rt.request_blocking(&mut ctx(5070, None), &mut bad),
        Decision::Continue
    );
    assert_eq!(
        bad.to_bytes(),
        before,
        "fail-open must undo the failed filter's edits"
    );
    assert_eq!(counter(&rt, "bad", "traps"), 1);

    // The trapped store was dropped: a fresh instance counts from 1 again.
    let mut again = invite("");
    assert_eq!(
        rt.request_blocking(&mut ctx(5070, None), &mut again),
        Decision::Continue
    );
    assert_eq!(again.header("X-Misbehave-Calls"), Some("1"));
    assert_eq!(counter(&rt, "bad", "instantiations"), 2);
}

#[test]
fn trap_fail_closed_answers_500_and_drops_replies() {
    let rt = misbehaving("trap", FailurePolicy::FailClosed, 20);
    let mut bad = invite("X-Misbehave: yes\r\n");
    match rt.request_blocking(&mut ctx(5070, None), &mut bad) {
        Decision::Reply { code, .. } => assert_eq!(code, 500),
        other => panic!("expected a 500 reply, got {other:?}"),
    }
    let mut bad_reply = reply(180, "X-Misbehave: yes\r\n");
    assert_eq!(
        rt.reply_blocking(&mut ctx(5070, None), &mut bad_reply),
        Decision::Drop
    );
    let mut good_reply = reply(180, "");
    assert_eq!(
        rt.reply_blocking(&mut ctx(5070, None), &mut good_reply),
        Decision::Continue
    );
    assert_eq!(counter(&rt, "bad", "traps"), 2);
}

#[test]
fn endless_loop_is_interrupted_by_the_cpu_limit() {
    let rt = misbehaving("loop", FailurePolicy::FailClosed, 20);
    let started = Instant::now();
    let decision = rt.request_blocking(&mut ctx(5070, None), &mut invite("X-Misbehave: yes\r\n"));
    let elapsed = started.elapsed();
    assert!(
        matches!(decision, Decision::Reply { code: 500, .. }),
        "{decision:?}"
    );
    // 20 ms of CPU; the bound leaves room for a loaded test machine.
    assert!(
        elapsed < Duration::from_secs(2),
        "cpu limit 20 ms, took {elapsed:?}"
    );
    assert_eq!(counter(&rt, "bad", "timeouts"), 1);
    assert_fresh_instance_serves(&rt);
}

#[test]
fn unbounded_allocation_hits_the_memory_limit() {
    let rt = misbehaving("oom", FailurePolicy::FailOpen, 5000);
    let mut bad = invite("X-Misbehave: yes\r\n");
    assert_eq!(
        rt.request_blocking(&mut ctx(5070, None), &mut bad),
        Decision::Continue
    );
    assert_eq!(counter(&rt, "bad", "out_of_memory"), 1, "{}", rt.status());
    assert_eq!(counter(&rt, "bad", "traps"), 0);
    assert_fresh_instance_serves(&rt);
}

#[test]
fn panic_is_a_trap() {
    let rt = misbehaving("panic", FailurePolicy::FailClosed, 20);
    let decision = rt.request_blocking(&mut ctx(5070, None), &mut invite("X-Misbehave: yes\r\n"));
    assert!(
        matches!(decision, Decision::Reply { code: 500, .. }),
        "{decision:?}"
    );
    assert_eq!(counter(&rt, "bad", "traps"), 1);
    // An ACK cannot be answered: fail-closed drops it.
    let ack = "ACK sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKack\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\nCall-ID: c1@test\r\nCSeq: 1 ACK\r\nX-Misbehave: yes\r\nContent-Length: 0\r\n\r\n";
    let mut ack = Message::parse(Bytes::from(ack)).expect("ACK parses");
    assert_eq!(
        rt.request_blocking(&mut ctx(5070, None), &mut ack),
        Decision::Drop
    );
}

#[test]
fn failing_filter_in_a_chain_is_skipped_when_fail_open() {
    let cache = shared_cache();
    let chain = vec![
        filter_config(&filter("filter_misbehave"), json!({"mode": "trap"})),
        filter_config(&filter("filter_mark_b"), json!({})),
    ];
    let rt = Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, chain)],
        options(&cache),
    )
    .expect("runtime");
    let mut bad = invite("X-Misbehave: yes\r\n");
    assert_eq!(
        rt.request_blocking(&mut ctx(5070, None), &mut bad),
        Decision::Continue
    );
    assert_eq!(bad.header("X-Filter-Version"), Some("b"));
    assert_eq!(bad.header("X-Misbehave-Touched"), None);
}

#[test]
fn bad_configuration_is_rejected_at_load() {
    let cache = shared_cache();
    let f = filter_config(&filter("uac_filter"), json!({"no_such_option": true}));
    let err = Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, vec![f])],
        options(&cache),
    )
    .err()
    .expect("configure must fail");
    assert!(
        matches!(&err, FilterError::Configure(m) if m.contains("no_such_option")),
        "{err}"
    );
    let missing = filter_config(Path::new("/nonexistent/filter.wasm"), json!({}));
    let err = Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, vec![missing])],
        options(&cache),
    )
    .err()
    .expect("missing file must fail");
    assert!(matches!(err, FilterError::Load(_)), "{err}");
}

#[test]
fn hot_swap_changes_behaviour_keeps_dialog_state_and_refuses_bad_versions() {
    let cache = shared_cache();
    let f = filter_config(&filter("filter_mark_a"), json!({"x": 1}));
    let rt = Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, vec![f])],
        options(&cache),
    )
    .expect("runtime");
    let mut m = invite("");
    rt.request_blocking(&mut ctx(5070, Some("dlg-1")), &mut m);
    assert_eq!(m.header("X-Filter-Version"), Some("a"));

    let report = rt
        .reload("t", Some(&filter("filter_mark_b")), None)
        .expect("swap to b");
    assert!(report.elapsed < Duration::from_secs(5));
    assert_ne!(report.sha256, report.previous_sha256);
    let mut m = invite("");
    rt.request_blocking(&mut ctx(5070, Some("dlg-1")), &mut m);
    assert_eq!(m.header("X-Filter-Version"), Some("b"));
    // Dialog variables are host-side: version b sees what version a wrote.
    assert_eq!(
        rt.filter_rpc("t", "dialog-versions", "dlg-1", 0),
        Ok("\"ab\"".to_string())
    );

    // A version whose configure fails (uac rejects the unknown key "x") and a
    // missing file both leave b in place.
    let err = rt
        .reload("t", Some(&filter("uac_filter")), None)
        .expect_err("configure fails");
    assert!(matches!(err, FilterError::Configure(_)), "{err}");
    assert!(
        rt.reload("t", Some(Path::new("/nonexistent.wasm")), None)
            .is_err()
    );
    let mut m = invite("");
    rt.request_blocking(&mut ctx(5070, None), &mut m);
    assert_eq!(m.header("X-Filter-Version"), Some("b"));
    assert_eq!(counter(&rt, "t", "swaps"), 1);
    assert_eq!(counter(&rt, "t", "failed_swaps"), 2);
    assert!(matches!(
        rt.reload("nobody", None, None),
        Err(FilterError::BadRequest(_))
    ));
}

#[test]
fn tenants_do_not_see_each_others_state() {
    let cache = shared_cache();
    let a = tenant(
        "a",
        5070,
        FailurePolicy::FailOpen,
        vec![filter_config(&filter("filter_mark_a"), json!({}))],
    );
    let b = tenant(
        "b",
        5071,
        FailurePolicy::FailOpen,
        vec![filter_config(&filter("filter_mark_b"), json!({}))],
    );
    let rt = Runtime::new(&[a, b], options(&cache)).expect("runtime");
    rt.request_blocking(&mut ctx(5070, Some("shared-dialog")), &mut invite(""));
    let mut m = invite("");
    rt.request_blocking(&mut ctx(5071, None), &mut m);
    assert_eq!(m.header("X-Filter-Version"), Some("b"));
    assert_eq!(
        rt.filter_rpc("a", "dialog-versions", "shared-dialog", 0),
        Ok("\"a\"".to_string())
    );
    assert_eq!(
        rt.filter_rpc("b", "dialog-versions", "shared-dialog", 0),
        Ok("\"\"".to_string())
    );
    let status = rt.status();
    assert_eq!(status["tenants"][0]["metrics"]["requests_marked"], json!(1));
    assert_eq!(status["tenants"][1]["metrics"]["requests_marked"], json!(1));
}

#[test]
fn artifact_cache_is_used_on_the_next_load() {
    let cache = tempfile::tempdir().expect("tmp");
    let f = filter_config(&filter("filter_noop"), json!({}));
    let first = Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, vec![f.clone()])],
        options(cache.path()),
    )
    .expect("runtime");
    let report = first.reload("t", None, None).expect("reload");
    assert!(
        report.from_cache,
        "second load of the same wasm must come from the cache"
    );
    let artifacts = std::fs::read_dir(cache.path()).expect("cache dir").count();
    assert_eq!(artifacts, 1);
    // A restart (new engine, same configuration) finds the artifact too.
    drop(first);
    let second = Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, vec![f])],
        options(cache.path()),
    )
    .expect("runtime");
    assert!(second.reload("t", None, None).expect("reload").from_cache);
}

#[test]
fn file_watch_swaps_a_changed_filter() {
    let cache = shared_cache();
    let dir = tempfile::tempdir().expect("tmp");
    let live = dir.path().join("live.wasm");
    std::fs::copy(filter("filter_mark_a"), &live).expect("copy");
    let mut f = filter_config(&live, json!({}));
    f.watch_ms = Some(20);
    let rt = Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, vec![f])],
        options(&cache),
    )
    .expect("runtime");
    // Make sure the new file's mtime differs even on coarse clocks.
    std::thread::sleep(Duration::from_millis(20));
    let staging = dir.path().join("staging.wasm");
    std::fs::copy(filter("filter_mark_b"), &staging).expect("copy");
    std::fs::rename(&staging, &live).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut m = invite("");
        rt.request_blocking(&mut ctx(5070, None), &mut m);
        if m.header("X-Filter-Version") == Some("b") {
            break;
        }
        assert!(Instant::now() < deadline, "watcher did not swap the filter");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct TimingOutSender;

impl RequestSender for TimingOutSender {
    fn send_request(
        &self,
        _request: Message,
        _next_hop: Option<String>,
    ) -> BoxFuture<Result<Message, SendFailure>> {
        Box::pin(async { Err(SendFailure::Timeout) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_and_originated_requests_call_back_into_the_filter() {
    let cache = shared_cache();
    let f = filter_config(&filter("filter_mark_a"), json!({}));
    let rt = Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, vec![f])],
        options(&cache),
    )
    .expect("runtime");
    rt.set_request_sender(Arc::new(TimingOutSender));
    rt.filter_rpc("t", "timer", "10", 0).expect("timer armed");
    rt.filter_rpc("t", "send", "null", 0).expect("request sent");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = rt.status()["tenants"][0]["metrics"].clone();
        if metrics["timer_7"] == json!(1) && metrics["local_reply_408"] == json!(1) {
            break;
        }
        assert!(Instant::now() < deadline, "callbacks missing: {metrics}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The proxy calls hooks on tokio worker threads. A guest's panic message or
/// allocation failure goes to a blocking WASI stderr write, which must trap
/// (wasmtime-wasi's sync version would enter tokio and panic the host).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_wasi_calls_on_a_tokio_worker_trap_instead_of_crashing() {
    for (mode, counter_name) in [("panic", "traps"), ("oom", "out_of_memory")] {
        let rt = misbehaving(mode, FailurePolicy::FailOpen, 5000);
        let mut bad = invite("X-Misbehave: yes\r\n");
        assert_eq!(
            rt.request_blocking(&mut ctx(5070, None), &mut bad),
            Decision::Continue
        );
        assert_eq!(
            counter(&rt, "bad", counter_name),
            1,
            "{mode}: {}",
            rt.status()
        );
    }
}
