//! In-process tests of the filter runtime (no proxy, no network): each
//! failure policy outcome, re-instantiation, hot swap, tenant isolation,
//! workers and queues, the CPU clock limit, timers, originated requests and
//! the artifact cache.
//!
//! Needs the test filters built first:
//! `cargo build --profile wasm --target wasm32-wasip2 -p uac-filter -p filter-noop -p filter-misbehave -p filter-mark-a -p filter-mark-b -p filter-wit-baseline`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use siphost::proxy::Origination;
use siphost::proxy::hooks::{
    CallBlocking, Decision, FilterHooks, HookCall, HookContext, HookResult, Submitted,
};
use siphost::runtime::config::{FailurePolicy, FilterConfig, TenantConfig};
use siphost::runtime::{EngineOptions, FilterError, RequestSender, Runtime, SendDone, SendFailure};
use siphost::sip::{Bytes, Message};
use siphost::transport::TransportKind;

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
        "{} missing: build the test filters first (cargo build --profile wasm --target wasm32-wasip2 -p uac-filter -p filter-noop -p filter-misbehave -p filter-mark-a -p filter-mark-b -p filter-wit-baseline)",
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
        registrations: None,
        access: None,
        workers: 1,
        queue_limit: 1000,
        inline_hooks: true,
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

/// Names the component imports from `siphost:filter/types@0.1.0`.
fn imported_types_functions(path: &Path) -> Vec<String> {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, path).expect("component");
    let ty = component.component_type();
    let (_, types) = ty
        .imports(&engine)
        .find(|(name, _)| *name == "siphost:filter/types@0.1.0")
        .expect("imports the types interface");
    let wasmtime::component::types::ComponentItem::ComponentInstance(instance) = types.ty else {
        panic!("types is not an instance import");
    };
    instance
        .exports(&engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// `message.endpoint` was added to 0.1 after filters were built against it: a component
/// built from the WIT of before (tests/filters/wit-baseline, a frozen copy) does not
/// import it, and still links against, instantiates in and runs on this host.
#[test]
fn a_component_built_before_message_endpoint_still_loads_and_runs() {
    let path = filter("filter_wit_baseline");
    let imported = imported_types_functions(&path);
    assert!(
        imported.iter().any(|n| n == "[method]message.source"),
        "{imported:?}"
    );
    assert!(
        !imported.iter().any(|n| n == "[method]message.endpoint"),
        "the baseline must be built without message.endpoint: {imported:?}"
    );
    let cache = shared_cache();
    let f = filter_config(&path, json!({}));
    let rt = Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, vec![f])],
        options(&cache),
    )
    .expect("a host with message.endpoint loads the baseline");
    let mut msg = invite("");
    let mut context = ctx(5070, None);
    context.endpoint = Some("pbx".into());
    assert_eq!(
        rt.request_blocking(&mut context, &mut msg),
        Decision::Continue
    );
    assert_eq!(
        msg.header("X-Baseline"),
        Some("t INVITE from 127.0.0.1:5999")
    );
    assert_eq!(counter(&rt, "t", "traps"), 0);
}

/// The uac filter reads `$endpoint` through `message.endpoint`, on requests and on the
/// replies of the same transaction.
#[test]
fn uac_rules_read_the_identified_endpoint() {
    let cache = shared_cache();
    let path = filter("uac_filter");
    assert!(
        imported_types_functions(&path)
            .iter()
            .any(|n| n == "[method]message.endpoint")
    );
    let f = filter_config(
        &path,
        json!({"rule": [
            {"on": "request", "when": "$endpoint == \"blocked\"", "do": ["sl_send_reply(403, \"Endpoint $endpoint refused\")"]},
            {"on": "request", "do": ["append_hf(\"X-Endpoint: $endpoint\\r\\n\")"]},
            {"on": "reply", "when": "$endpoint != $null", "do": ["append_hf(\"X-Reply-Endpoint: $endpoint\\r\\n\")"]},
        ]}),
    );
    let rt = Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, vec![f])],
        options(&cache),
    )
    .expect("runtime");
    let mut context = ctx(5070, None);
    context.endpoint = Some("pbx".into());
    let mut msg = invite("");
    assert_eq!(
        rt.request_blocking(&mut context, &mut msg),
        Decision::Continue
    );
    assert_eq!(msg.header("X-Endpoint"), Some("pbx"));
    assert_eq!(context.endpoint.as_deref(), Some("pbx"), "given back");
    let mut r = reply(200, "");
    assert_eq!(rt.reply_blocking(&mut context, &mut r), Decision::Continue);
    assert_eq!(r.header("X-Reply-Endpoint"), Some("pbx"));
    let mut unidentified = invite("");
    assert_eq!(
        rt.request_blocking(&mut ctx(5070, None), &mut unidentified),
        Decision::Continue
    );
    assert_eq!(unidentified.header("X-Endpoint"), Some(""));
    let mut blocked = ctx(5070, None);
    blocked.endpoint = Some("blocked".into());
    assert!(matches!(
        rt.request_blocking(&mut blocked, &mut invite("")),
        Decision::Reply { code: 403, ref reason, .. } if reason == "Endpoint blocked refused"
    ));
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
    // The fresh instance was the spare made ahead of time, not one made on
    // the message path.
    assert_eq!(counter(&rt, "bad", "inline_instantiations"), 0);
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

fn variables(runtime: &Runtime, tenant: &str) -> (u64, u64) {
    let status = runtime.status();
    let t = status["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .find(|t| t["name"] == json!(tenant))
        .cloned()
        .expect("tenant");
    let count = |key: &str| t[key].as_u64().expect("variable count");
    (count("dialog_variables"), count("transaction_variables"))
}

/// What the uac filter keeps with the host for a replaced From (the original, per
/// transaction and with restore_dlg per dialog) goes when the proxy says the transaction
/// and its dialog are over, not minutes later when it would expire: at a few hundred calls
/// per second the tenant's variable limit was full within minutes and calls failed.
#[test]
fn variables_of_an_ended_transaction_and_dialog_are_dropped() {
    let config = json!({
        "restore_mode": "auto",
        "restore_dlg": true,
        "rule": [{
            "on": "request",
            "when": "is_method(\"INVITE\") && !has_totag()",
            "do": ["uac_replace_from(\"sip:anonymous@anonymous.invalid\")"],
        }],
    });
    let f = filter_config(&filter("uac_filter"), config);
    let rt = Runtime::new(
        &[tenant("vars", 5071, FailurePolicy::FailClosed, vec![f])],
        options(&shared_cache()),
    )
    .expect("runtime");
    let mut call = ctx(5071, Some("c1@test"));
    let mut m = invite("");
    assert_eq!(rt.request_blocking(&mut call, &mut m), Decision::Continue);
    assert_eq!(
        m.header("From"),
        Some("<sip:anonymous@anonymous.invalid>;tag=a1")
    );
    let (dialog, transaction) = variables(&rt, "vars");
    assert!(dialog > 0 && transaction > 0, "{dialog} {transaction}");
    // The INVITE's transaction ends with the call up: its variables go, the dialog's stay.
    rt.transaction_ended(&call, false);
    assert_eq!(variables(&rt, "vars"), (dialog, 0));
    // The BYE's transaction ends the dialog.
    rt.transaction_ended(&ctx(5071, Some("c1@test")), true);
    assert_eq!(variables(&rt, "vars"), (0, 0));
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
fn corrupted_cached_artifact_is_recompiled_not_loaded() {
    let cache = tempfile::tempdir().expect("tmp");
    let f = filter_config(&filter("filter_noop"), json!({}));
    let tenants = [tenant("t", 5070, FailurePolicy::FailOpen, vec![f])];
    drop(Runtime::new(&tenants, options(cache.path())).expect("runtime"));
    let artifact = std::fs::read_dir(cache.path())
        .expect("cache dir")
        .next()
        .expect("one artifact")
        .expect("entry")
        .path();
    let mut bytes = std::fs::read(&artifact).expect("read artifact");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artifact, &bytes).expect("corrupt artifact");

    let rt = Runtime::new(&tenants, options(cache.path())).expect("recompiled");
    let mut msg = invite("");
    assert_eq!(
        rt.request_blocking(&mut ctx(5070, None), &mut msg),
        Decision::Continue
    );
    let rewritten = std::fs::read(&artifact).expect("read artifact");
    assert_ne!(rewritten, bytes, "the corrupted artifact must be replaced");
}

/// Submits a call without waiting; the result arrives on the returned channel.
fn submit(rt: &Runtime, call: HookCall) -> (Submitted, std::sync::mpsc::Receiver<HookResult>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let submitted = rt.submit(
        call,
        Box::new(move |result| {
            let _ = tx.send(result);
        }),
    );
    (submitted, rx)
}

fn request_call(port: u16, dialog: Option<&str>, extra: &str) -> HookCall {
    HookCall::Request {
        ctx: ctx(port, dialog),
        msg: invite(extra),
    }
}

/// A fail-open tenant whose filter loops on requests carrying `X-Misbehave: yes`.
fn looping_tenant(name: &str, port: u16, cpu_limit_ms: u32) -> TenantConfig {
    let mut t = tenant(
        name,
        port,
        FailurePolicy::FailOpen,
        vec![filter_config(
            &filter("filter_misbehave"),
            json!({"mode": "loop"}),
        )],
    );
    t.cpu_limit_ms = cpu_limit_ms;
    t
}

/// Submits a plain request and says where it ran: `true` on this thread.
fn ran_here(rt: &Runtime) -> (bool, HookResult) {
    let (submitted, done) = submit(rt, request_call(5070, None, ""));
    match submitted {
        Submitted::Decided(result) => (true, result),
        Submitted::Queued => (
            false,
            done.recv_timeout(Duration::from_secs(30)).expect("result"),
        ),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_quick_tenant_earns_calls_on_the_proxy_thread_and_one_failed_call_takes_them_away() {
    let probation = siphost::runtime::inline::PROBATION_CALLS;
    let t = looping_tenant("t", 5070, 100);
    let rt = Runtime::new(&[t], options(&shared_cache())).expect("runtime");
    // In probation every call goes to the worker, however quick.
    for _ in 0..probation {
        assert!(!ran_here(&rt).0, "a call ran inline during probation");
    }
    assert_eq!(counter(&rt, "t", "hooks_inline"), 0);
    // Earned: the next call runs here, on the worker's own instance. Two worker calls that
    // happen to take over 0.5 ms of CPU in one probation (a debug build on a loaded
    // machine) start it again, so the opening is awaited, within bounds.
    let mut made = probation;
    let result = loop {
        let (here, result) = ran_here(&rt);
        made += 1;
        if here {
            break result;
        }
        assert!(
            made < 8 * probation,
            "a quick tenant's call still went to its worker"
        );
    };
    let HookCall::Request { msg, .. } = result.call else {
        panic!("a request comes back");
    };
    let calls = made.to_string();
    assert_eq!(msg.header("X-Misbehave-Calls"), Some(calls.as_str()));
    assert_eq!(counter(&rt, "t", "hooks_inline"), 1);
    // A call that loops runs here too (the bound: one cpu_limit_ms of this
    // thread per closing), is stopped, and closes the gate.
    let (submitted, _) = submit(&rt, request_call(5070, None, "X-Misbehave: yes\r\n"));
    assert!(matches!(submitted, Submitted::Decided(_)), "{submitted:?}");
    assert_eq!(counter(&rt, "t", "timeouts"), 1);
    // Back on the worker for twice the probation, then inline again (awaited within
    // bounds, as above).
    for _ in 0..2 * probation {
        assert!(!ran_here(&rt).0, "a call ran inline after a slow one");
    }
    assert!(
        (0..8 * probation).any(|_| ran_here(&rt).0),
        "the gate did not open after the probation"
    );
    assert_eq!(counter(&rt, "t", "hooks_inline"), 3);
    assert_eq!(counter(&rt, "t", "inline_closings"), 1);
}

#[test]
fn a_looping_tenant_never_runs_on_the_proxy_thread_and_inline_hooks_false_keeps_every_call_on_the_worker()
 {
    let probation = siphost::runtime::inline::PROBATION_CALLS;
    let mut looping = tenant(
        "looping",
        5070,
        FailurePolicy::FailOpen,
        vec![filter_config(
            &filter("filter_misbehave"),
            json!({"mode": "loop", "trigger": "always"}),
        )],
    );
    looping.cpu_limit_ms = 5;
    let mut strict = tenant(
        "strict",
        5071,
        FailurePolicy::FailOpen,
        vec![filter_config(&filter("filter_noop"), json!({}))],
    );
    strict.inline_hooks = false;
    let rt = Runtime::new(&[looping, strict], options(&shared_cache())).expect("runtime");
    for _ in 0..probation + 2 {
        assert!(!ran_here(&rt).0, "a looping tenant's call ran inline");
        let (submitted, done) = submit(&rt, request_call(5071, None, ""));
        assert!(matches!(submitted, Submitted::Queued), "{submitted:?}");
        done.recv_timeout(Duration::from_secs(30)).expect("result");
    }
    assert_eq!(counter(&rt, "looping", "hooks_inline"), 0);
    assert_eq!(counter(&rt, "strict", "hooks_inline"), 0);
    assert_eq!(counter(&rt, "looping", "timeouts"), probation + 2);
    // Every failure sent the looping tenant back to its worker; the strict one never left it.
    assert_eq!(counter(&rt, "looping", "inline_closings"), probation + 2);
    assert_eq!(counter(&rt, "strict", "inline_closings"), 0);
}

#[test]
fn a_looping_tenant_does_not_hold_up_another() {
    let cache = shared_cache();
    let slow = looping_tenant("slow", 5070, 1000);
    let quick = tenant(
        "quick",
        5071,
        FailurePolicy::FailOpen,
        vec![filter_config(&filter("filter_noop"), json!({}))],
    );
    let rt = Runtime::new(&[slow, quick], options(&cache)).expect("runtime");
    let started = Instant::now();
    let (submitted, looping) = submit(&rt, request_call(5070, None, "X-Misbehave: yes\r\n"));
    assert!(matches!(submitted, Submitted::Queued), "{submitted:?}");
    // Submitting returned at once; the other tenant is served meanwhile.
    assert!(started.elapsed() < Duration::from_millis(200));
    for _ in 0..20 {
        let mut msg = invite("");
        assert_eq!(
            rt.request_blocking(&mut ctx(5071, None), &mut msg),
            Decision::Continue
        );
    }
    assert!(
        looping.try_recv().is_err(),
        "the looping call must still run while the other tenant is served"
    );
    // A restart of the busy tenant does not wait for its running call: the
    // fresh instances are made aside and taken before the worker's next call.
    rt.restart("slow").expect("restart");
    assert!(
        looping.try_recv().is_err(),
        "restart returned only after the looping call ended"
    );
    let result = looping
        .recv_timeout(Duration::from_secs(30))
        .expect("looping call ends");
    assert_eq!(result.decision, Decision::Continue);
    assert_eq!(counter(&rt, "slow", "timeouts"), 1);
}

#[test]
fn a_full_queue_refuses_new_requests_but_never_replies() {
    let cache = shared_cache();
    let mut t = looping_tenant("t", 5070, 300);
    t.queue_limit = 1;
    let rt = Runtime::new(&[t], options(&cache)).expect("runtime");
    let (first, first_done) = submit(&rt, request_call(5070, None, "X-Misbehave: yes\r\n"));
    assert!(matches!(first, Submitted::Queued), "{first:?}");
    let (second, _) = submit(&rt, request_call(5070, None, ""));
    assert!(
        matches!(second, Submitted::Overloaded(HookCall::Request { .. })),
        "{second:?}"
    );
    let reply_call = HookCall::Reply {
        ctx: ctx(5070, None),
        msg: reply(200, ""),
    };
    let (third, third_done) = submit(&rt, reply_call);
    assert!(matches!(third, Submitted::Queued), "{third:?}");
    assert_eq!(counter(&rt, "t", "overloaded"), 1);
    first_done
        .recv_timeout(Duration::from_secs(30))
        .expect("first ends");
    third_done
        .recv_timeout(Duration::from_secs(30))
        .expect("reply passes");
    // The place is free again.
    let (fourth, fourth_done) = submit(&rt, request_call(5070, None, ""));
    assert!(matches!(fourth, Submitted::Queued), "{fourth:?}");
    fourth_done
        .recv_timeout(Duration::from_secs(30))
        .expect("fourth ends");
}

#[test]
fn one_dialog_passes_in_order_through_one_instance_of_several() {
    let cache = shared_cache();
    let mut t = tenant(
        "t",
        5070,
        FailurePolicy::FailOpen,
        vec![filter_config(
            &filter("filter_misbehave"),
            json!({"mode": "trap"}),
        )],
    );
    t.workers = 4;
    let rt = Runtime::new(&[t], options(&cache)).expect("runtime");
    let pending: Vec<_> = (0..30)
        .map(|_| submit(&rt, request_call(5070, Some("one-dialog"), "")).1)
        .collect();
    for (i, done) in pending.into_iter().enumerate() {
        let result = done.recv_timeout(Duration::from_secs(30)).expect("result");
        let HookCall::Request { msg, .. } = result.call else {
            panic!("a request comes back");
        };
        // Every call of the dialog met the same instance, in submission order.
        let calls = (i + 1).to_string();
        assert_eq!(msg.header("X-Misbehave-Calls"), Some(calls.as_str()));
    }
    // Other dialogs spread over the other workers (fresh instances count from 1).
    let firsts = (0..16)
        .map(|d| {
            let mut msg = invite("");
            rt.request_blocking(&mut ctx(5070, Some(&format!("dialog-{d}"))), &mut msg);
            msg.header("X-Misbehave-Calls").map(str::to_string)
        })
        .filter(|calls| calls.as_deref() == Some("1"))
        .count();
    assert!(firsts >= 1, "no dialog reached a second worker");
}

/// Burns CPU on `n` threads until dropped, so the filter worker competes for
/// the cores.
struct CpuHogs {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHogs {
    fn start(n: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                })
            })
            .collect();
        Self { stop, threads }
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[test]
fn cpu_limit_counts_cpu_time_not_wall_time_on_a_saturated_machine() {
    const LIMIT_MS: u32 = 20;
    let cache = shared_cache();
    let spin = |iterations: u64, limit_ms: u32| {
        let mut t = tenant(
            "spin",
            5070,
            FailurePolicy::FailClosed,
            vec![filter_config(
                &filter("filter_misbehave"),
                json!({"mode": "spin", "iterations": iterations}),
            )],
        );
        t.cpu_limit_ms = limit_ms;
        Runtime::new(&[t], options(&cache)).expect("runtime")
    };
    // Calibrate on the machine as it is: wall time bounds CPU time from above,
    // so the work is sized to at most a quarter of the budget in wall time.
    let mut iterations = 1_000_000u64;
    loop {
        let rt = spin(iterations, 10_000);
        let started = Instant::now();
        rt.request_blocking(&mut ctx(5070, None), &mut invite("X-Misbehave: yes\r\n"));
        let wall = started.elapsed();
        if wall >= Duration::from_millis(u64::from(LIMIT_MS) / 4) || iterations > 1 << 34 {
            let scale = (u64::from(LIMIT_MS) * 1000 / 4) as f64 / wall.as_micros().max(1) as f64;
            iterations = ((iterations as f64) * scale.min(1.0)) as u64;
            break;
        }
        iterations *= 4;
    }
    let healthy = spin(iterations, LIMIT_MS);
    let looping = misbehaving("loop", FailurePolicy::FailClosed, LIMIT_MS);
    let hogs = CpuHogs::start(4);
    let mut slowest = Duration::ZERO;
    for _ in 0..30 {
        let started = Instant::now();
        let decision =
            healthy.request_blocking(&mut ctx(5070, None), &mut invite("X-Misbehave: yes\r\n"));
        slowest = slowest.max(started.elapsed());
        assert_eq!(decision, Decision::Continue, "a healthy hook was stopped");
    }
    assert_eq!(counter(&healthy, "spin", "timeouts"), 0);
    let started = Instant::now();
    let decision =
        looping.request_blocking(&mut ctx(5070, None), &mut invite("X-Misbehave: yes\r\n"));
    let looped = started.elapsed();
    drop(hogs);
    assert!(
        matches!(decision, Decision::Reply { code: 500, .. }),
        "{decision:?}"
    );
    assert_eq!(counter(&looping, "bad", "timeouts"), 1);
    // Its 20 ms of CPU, at a third of a core or more, plus scheduling slack.
    assert!(
        looped < Duration::from_secs(2),
        "loop stopped after {looped:?}"
    );
    eprintln!(
        "iterations {iterations}: slowest healthy call {slowest:?} wall (limit {LIMIT_MS} ms cpu), loop stopped after {looped:?}"
    );
}

#[test]
fn too_few_pool_slots_for_the_workers_is_a_clear_error() {
    let mut t = tenant(
        "t",
        5070,
        FailurePolicy::FailOpen,
        vec![filter_config(&filter("filter_noop"), json!({}))],
    );
    t.workers = 4;
    let mut small = options(&shared_cache());
    small.max_instances = 8;
    let err = Runtime::new(&[t], small).err().expect("too small a pool");
    assert!(
        matches!(&err, FilterError::BadRequest(m) if m.contains("12 instances")),
        "{err}"
    );
}

#[test]
fn the_epoch_ticker_parks_when_idle_and_wakes_for_a_call() {
    let rt = misbehaving("loop", FailurePolicy::FailClosed, 20);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rt.ticker_parked() {
        assert!(Instant::now() < deadline, "the ticker never parked");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Parked, it does not wake at all.
    let wakes = rt.ticker_wakes();
    std::thread::sleep(Duration::from_millis(100));
    assert!(rt.ticker_parked());
    assert_eq!(rt.ticker_wakes(), wakes, "a parked ticker ticked");
    // A parked ticker still stops a loop: the call wakes it.
    let decision = rt.request_blocking(&mut ctx(5070, None), &mut invite("X-Misbehave: yes\r\n"));
    assert!(
        matches!(decision, Decision::Reply { code: 500, .. }),
        "{decision:?}"
    );
    assert_eq!(counter(&rt, "bad", "timeouts"), 1);
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

/// One tenant "t" with the mark-a filter, which sends requests and counts their replies.
fn mark_runtime(cache: &Path) -> Arc<Runtime> {
    let f = filter_config(&filter("filter_mark_a"), json!({}));
    Runtime::new(
        &[tenant("t", 5070, FailurePolicy::FailOpen, vec![f])],
        options(cache),
    )
    .expect("runtime")
}

struct TimingOutSender;

impl RequestSender for TimingOutSender {
    fn send_request(&self, _request: Message, _how: Origination, done: SendDone) {
        done(Err(SendFailure::Timeout));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_and_originated_requests_call_back_into_the_filter() {
    let cache = shared_cache();
    let rt = mark_runtime(&cache);
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

/// Notes, for each request it is given, how many the filter had counted as sent by then.
#[derive(Default)]
struct CountingSender {
    runtime: std::sync::OnceLock<std::sync::Weak<Runtime>>,
    counted_at_send: std::sync::Mutex<Vec<serde_json::Value>>,
}

impl RequestSender for CountingSender {
    fn send_request(&self, _request: Message, _how: Origination, done: SendDone) {
        let rt = self
            .runtime
            .get()
            .and_then(|rt| rt.upgrade())
            .expect("runtime");
        let sent = rt.status()["tenants"][0]["metrics"]["sent"].clone();
        self.counted_at_send.lock().expect("counted").push(sent);
        done(Err(SendFailure::Timeout));
    }
}

#[test]
fn the_requests_of_one_filter_call_reach_the_proxy_together_when_it_ends() {
    let rt = mark_runtime(&shared_cache());
    let sender = Arc::new(CountingSender::default());
    let _ = sender.runtime.set(Arc::downgrade(&rt));
    rt.set_request_sender(sender.clone());
    let ids = rt.filter_rpc("t", "send", "3", 0).expect("requests sent");
    assert_eq!(ids.split(',').count(), 3, "{ids}");
    // The filter counted each send right after making it: the core got none of them
    // before the call had made all three (one wake-up of the core, not three).
    assert_eq!(
        *sender.counted_at_send.lock().expect("counted"),
        vec![json!(3), json!(3), json!(3)]
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while rt.status()["tenants"][0]["metrics"]["local_reply_408"] != json!(3) {
        assert!(
            Instant::now() < deadline,
            "the replies never reached the filter"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Keeps each request's completion for the test to call, as the proxy core
/// does when the reply arrives, on a thread of its own.
#[derive(Default)]
struct DeferredSender {
    waiting: std::sync::Mutex<Vec<SendDone>>,
}

impl RequestSender for DeferredSender {
    fn send_request(&self, _request: Message, _how: Origination, done: SendDone) {
        self.waiting.lock().expect("waiting").push(done);
    }
}

#[test]
fn the_reply_to_a_filters_own_request_runs_on_the_thread_that_received_it_once_earned() {
    let rt = mark_runtime(&shared_cache());
    let sender = Arc::new(DeferredSender::default());
    rt.set_request_sender(sender.clone());
    let local_408s = || rt.status()["tenants"][0]["metrics"]["local_reply_408"].clone();
    let answer_one = || {
        rt.filter_rpc("t", "send", "null", 0).expect("request sent");
        let done = sender
            .waiting
            .lock()
            .expect("waiting")
            .pop()
            .expect("a request");
        done(Err(SendFailure::Timeout));
    };
    // In probation the reply goes to the worker.
    answer_one();
    let deadline = Instant::now() + Duration::from_secs(10);
    while local_408s() != json!(1) {
        assert!(
            Instant::now() < deadline,
            "the reply never reached the filter"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(counter(&rt, "t", "hooks_inline"), 0);
    // Hook calls until one runs here: the probation is over.
    let probation = siphost::runtime::inline::PROBATION_CALLS;
    assert!(
        (0..4 * probation).any(|_| ran_here(&rt).0),
        "the tenant never earned inline calls"
    );
    // Earned: the reply runs inside `done`, on this thread.
    answer_one();
    assert_eq!(local_408s(), json!(2));
    assert_eq!(counter(&rt, "t", "hooks_inline"), 2);
}

/// Records how each request was to be sent, and times it out.
#[derive(Default)]
struct RecordingSender {
    sent: std::sync::Mutex<Vec<Origination>>,
}

impl RequestSender for RecordingSender {
    fn send_request(&self, _request: Message, how: Origination, done: SendDone) {
        self.sent.lock().expect("sent").push(how);
        done(Err(SendFailure::Timeout));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_sends_from_its_own_sockets_but_never_from_another_tenants() {
    let cache = shared_cache();
    let uac = || filter_config(&filter("uac_filter"), json!({}));
    let rt = Runtime::new(
        &[
            tenant("one", 5070, FailurePolicy::FailOpen, vec![uac()]),
            tenant("two", 5071, FailurePolicy::FailOpen, vec![uac()]),
        ],
        options(&cache),
    )
    .expect("runtime");
    let sender = Arc::new(RecordingSender::default());
    rt.set_request_sender(sender.clone());
    let send = |sock: &str| {
        let params = json!({"method": "OPTIONS", "ruri": "sip:127.0.0.1:5090", "sock": sock});
        rt.filter_rpc("one", "uac.req_send", &params.to_string(), 0)
    };
    let refused = send("udp:127.0.0.1:5071")
        .expect_err("tenant two's socket")
        .to_string();
    assert!(refused.contains("belongs to another tenant"), "{refused}");
    send("udp:127.0.0.1:5070").expect("its own socket");
    // The filter's worker hands the request to the sender before the RPC answers.
    let sent = sender.sent.lock().expect("sent").clone();
    assert_eq!(sent.len(), 1, "the refused request was not sent");
    let own: SocketAddr = "127.0.0.1:5070".parse().expect("addr");
    assert_eq!(sent[0].local, Some((TransportKind::Udp, own)));
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

/// The WIT grew a `registrations` import and a `registration-handler` export, in the
/// world `filter-with-registrations`. A filter built for the plain `filter` world (noop)
/// still loads and runs, also in a tenant with `[tenant.registrations]`, whose
/// registrations then stay idle; the uac filter exports the handler and takes them.
#[tokio::test(flavor = "multi_thread")]
async fn plain_world_filters_load_beside_registrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let registrations = |name: &str| {
        Some(siphost::registrations::RegistrationsConfig {
            db_url: format!("sqlite://{}/{name}.db", dir.path().display()),
            table: "uacreg".to_owned(),
            live_state_log: None,
        })
    };
    // A tenant holding registrations must identify who may send through it.
    let access = || {
        Some(
            toml::from_str("[[endpoint]]\nname = \"local\"\nsource = [\"127.0.0.1/32\"]")
                .expect("access section"),
        )
    };
    let mut plain = tenant(
        "plain",
        5071,
        FailurePolicy::FailOpen,
        vec![filter_config(&filter("filter_noop"), json!({}))],
    );
    plain.registrations = registrations("plain");
    plain.access = access();
    let mut uac = tenant(
        "uac",
        5072,
        FailurePolicy::FailOpen,
        vec![filter_config(&filter("uac_filter"), json!({}))],
    );
    uac.registrations = registrations("uac");
    uac.access = access();
    let configs = [plain, uac];
    let rt = Runtime::new(&configs, options(&shared_cache())).expect("runtime");
    rt.start_registrations(&configs)
        .await
        .expect("registrations start");
    let plain = rt.tenant("plain").expect("plain");
    assert_eq!(plain.registration_filter(), None);
    assert!(plain.shared.registrations.get().is_some());
    assert_eq!(
        rt.tenant("uac").expect("uac").registration_filter(),
        Some(0)
    );
    let rt2 = rt.clone();
    let decision = tokio::task::spawn_blocking(move || {
        let mut msg = invite("");
        rt2.request_blocking(&mut ctx(5071, None), &mut msg)
    })
    .await
    .expect("hook call");
    assert_eq!(decision, Decision::Continue);
    // The uac filter answers its registration RPC from the (empty) store.
    let rt3 = rt.clone();
    let dump = tokio::task::spawn_blocking(move || rt3.filter_rpc("uac", "uac.reg_dump", "[]", 0))
        .await
        .expect("rpc call")
        .expect("uac.reg_dump");
    assert_eq!(dump, "[]");
}

/// The uac filter with only a failure rule declares only `failures`: the initial INVITE
/// and its replies go on without a hand-off (no hook runs). Once `uac_auth()` has
/// answered a challenge, the dialog holds its CSeq bookkeeping, so the next in-dialog
/// request reaches the filter although it declared no request hook.
#[test]
fn a_filter_gets_the_hooks_it_declared_and_every_message_carrying_its_state() {
    let auth = filter_config(
        &filter("uac_filter"),
        json!({
            "credential": ["alice:trunk.test:secret"],
            "rule": [{"on": "failure", "when": "t_check_status(\"401|407\")", "do": ["uac_auth()", "t_relay()"]}],
        }),
    );
    let mut lean = tenant("lean", 5072, FailurePolicy::FailOpen, vec![auth]);
    lean.access = Some(
        toml::from_str("[[endpoint]]\nname = \"local\"\nsource = [\"127.0.0.1/32\"]\n")
            .expect("access config"),
    );
    let rt = Runtime::new(&[lean], options(&shared_cache())).expect("runtime");
    let (first, _) = submit(&rt, request_call(5072, Some("c1@test"), ""));
    assert!(matches!(first, Submitted::NoFilter(_)), "{first:?}");
    let (provisional, _) = submit(
        &rt,
        HookCall::Reply {
            ctx: ctx(5072, Some("c1@test")),
            msg: reply(180, ""),
        },
    );
    assert!(matches!(provisional, Submitted::NoFilter(_)));
    assert_eq!(counter(&rt, "lean", "calls"), 0, "no hook may have run");

    let challenge = reply(
        401,
        "WWW-Authenticate: Digest realm=\"trunk.test\", nonce=\"n1\", qop=\"auth\", algorithm=MD5\r\n",
    );
    let (failure, answered) = submit(
        &rt,
        HookCall::Failure {
            ctx: ctx(5072, Some("c1@test")),
            request: invite(""),
            reply: Box::new(challenge),
        },
    );
    assert!(matches!(failure, Submitted::Queued));
    let result = answered.recv().expect("failure hook answered");
    assert!(
        matches!(result.decision, Decision::Resend { .. }),
        "{:?}",
        result.decision
    );
    assert_eq!(counter(&rt, "lean", "calls"), 1);

    let bye = Message::parse(Bytes::from_static(
        b"BYE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKbye\r\nFrom: <sip:alice@example.com>;tag=a1\r\nTo: <sip:bob@example.com>;tag=b1\r\nCall-ID: c1@test\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    ))
    .expect("BYE parses");
    let (in_dialog, done) = submit(
        &rt,
        HookCall::Request {
            ctx: ctx(5072, Some("c1@test")),
            msg: bye,
        },
    );
    assert!(matches!(in_dialog, Submitted::Queued), "{in_dialog:?}");
    let renumbered = done.recv().expect("in-dialog request answered");
    let HookCall::Request { msg, .. } = renumbered.call else {
        panic!("a request comes back")
    };
    assert_eq!(
        msg.header("CSeq"),
        Some("3 BYE"),
        "CSeq follows the resent INVITE"
    );
    // Another call without state stays off the filter.
    let mut fresh = ctx(5072, Some("c2@test"));
    fresh.transaction_key = "z9hG4bKother".to_string();
    let (other, _) = submit(
        &rt,
        HookCall::Request {
            ctx: fresh,
            msg: invite(""),
        },
    );
    assert!(matches!(other, Submitted::NoFilter(_)));
}
