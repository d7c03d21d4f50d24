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
        inline_hooks: true,
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

/// Every `env` function of ABI 0.2.1, with its parameters (`true`: i64) and whether its
/// first parameter names a header map, buffer or stream type.
const ABI_0_2_1_ENV: &[(&str, &[bool], bool)] = &[
    ("proxy_log", &[false; 3], false),
    ("proxy_get_log_level", &[false; 1], false),
    ("proxy_get_current_time_nanoseconds", &[false; 1], false),
    ("proxy_set_tick_period_milliseconds", &[false; 1], false),
    ("proxy_get_buffer_bytes", &[false; 5], true),
    ("proxy_get_buffer_status", &[false; 3], true),
    ("proxy_set_buffer_bytes", &[false; 5], true),
    ("proxy_get_header_map_pairs", &[false; 3], true),
    ("proxy_set_header_map_pairs", &[false; 3], true),
    ("proxy_get_header_map_value", &[false; 5], true),
    ("proxy_replace_header_map_value", &[false; 5], true),
    ("proxy_remove_header_map_value", &[false; 3], true),
    ("proxy_add_header_map_value", &[false; 5], true),
    ("proxy_get_header_map_size", &[false; 2], true),
    ("proxy_get_property", &[false; 4], false),
    ("proxy_set_property", &[false; 4], false),
    ("proxy_get_shared_data", &[false; 5], false),
    ("proxy_set_shared_data", &[false; 5], false),
    ("proxy_register_shared_queue", &[false; 3], false),
    ("proxy_resolve_shared_queue", &[false; 5], false),
    ("proxy_dequeue_shared_queue", &[false; 3], false),
    ("proxy_enqueue_shared_queue", &[false; 3], false),
    ("proxy_continue_stream", &[false; 1], true),
    ("proxy_close_stream", &[false; 1], true),
    ("proxy_send_local_response", &[false; 8], false),
    ("proxy_http_call", &[false; 10], false),
    ("proxy_grpc_call", &[false; 12], false),
    ("proxy_grpc_stream", &[false; 9], false),
    ("proxy_grpc_send", &[false; 4], false),
    ("proxy_grpc_cancel", &[false; 1], false),
    ("proxy_grpc_close", &[false; 1], false),
    ("proxy_get_status", &[false; 3], false),
    ("proxy_set_effective_context", &[false; 1], false),
    ("proxy_done", &[], false),
    ("proxy_call_foreign_function", &[false; 6], false),
    ("proxy_define_metric", &[false; 4], false),
    ("proxy_increment_metric", &[false, true], false),
    ("proxy_record_metric", &[false, true], false),
    ("proxy_get_metric", &[false; 2], false),
];

/// Calls that act on the stream (answer, end, replace every header) are linked but not
/// made: zero arguments would turn them into a real decision.
const LINKED_NOT_CALLED: &[&str] = &[
    "proxy_send_local_response",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_done",
    "proxy_set_header_map_pairs",
];

/// A core module that imports every `env` function of ABI 0.2.1 (no SDK: an SDK imports
/// only what it uses), calls each with zero arguments (a type no map or buffer has, where
/// the first argument names one) on every request, bumps a counter `pw_requests` it
/// defines, then adds `X-All-Imports: linked`.
fn every_env_import_module() -> Vec<u8> {
    use wasm_encoder::{
        CodeSection, ConstExpr, DataSection, EntityType, ExportKind, ExportSection, Function,
        FunctionSection, ImportSection, MemArg, MemorySection, MemoryType, Module, TypeSection,
        ValType,
    };
    let mut types = TypeSection::new();
    let mut imports = ImportSection::new();
    for (i, (name, params, _)) in ABI_0_2_1_ENV.iter().enumerate() {
        let params = params
            .iter()
            .map(|wide| if *wide { ValType::I64 } else { ValType::I32 });
        types.ty().function(params, [ValType::I32]);
        imports.import("env", name, EntityType::Function(i as u32));
    }
    let imported = ABI_0_2_1_ENV.len() as u32;
    // Own functions: abi marker, allocate, vm_start/configure, context_create, request_headers.
    let own = [
        (vec![], vec![]),
        (vec![ValType::I32], vec![ValType::I32]),
        (vec![ValType::I32; 2], vec![ValType::I32]),
        (vec![ValType::I32; 2], vec![]),
        (vec![ValType::I32; 3], vec![ValType::I32]),
    ];
    for (params, results) in &own {
        types.ty().function(params.clone(), results.clone());
    }
    let own_type = |k: u32| imported + k;
    let mut functions = FunctionSection::new();
    for k in [0, 1, 2, 2, 3, 4] {
        functions.function(own_type(k));
    }
    let index = |k: u32| imported + k;
    let mut exports = ExportSection::new();
    for (name, k) in [
        ("proxy_abi_version_0_2_1", 0),
        ("proxy_on_memory_allocate", 1),
        ("proxy_on_vm_start", 2),
        ("proxy_on_configure", 3),
        ("proxy_on_context_create", 4),
        ("proxy_on_request_headers", 5),
    ] {
        exports.export(name, ExportKind::Func, index(k));
    }
    exports.export("memory", ExportKind::Memory, 0);
    let mut memories = MemorySection::new();
    memories.memory(MemoryType {
        minimum: 2,
        maximum: None,
        memory64: false,
        shared: false,
        page_size_log2: None,
    });
    const KEY: &[u8] = b"X-All-Imports";
    const VALUE: &[u8] = b"linked";
    const METRIC: &[u8] = b"pw_requests";
    let mut data = DataSection::new();
    data.active(0, &ConstExpr::i32_const(64), KEY.iter().copied());
    data.active(0, &ConstExpr::i32_const(96), VALUE.iter().copied());
    data.active(0, &ConstExpr::i32_const(128), METRIC.iter().copied());

    let mut code = CodeSection::new();
    let mut abi = Function::new([]);
    abi.instructions().end();
    code.function(&abi);
    // Every allocation lands in the second page: the host copies a value there and the
    // module never reads it.
    let mut allocate = Function::new([]);
    allocate.instructions().i32_const(65_536).end();
    code.function(&allocate);
    for _ in 0..2 {
        let mut yes = Function::new([]);
        yes.instructions().i32_const(1).end();
        code.function(&yes);
    }
    let mut create = Function::new([]);
    create.instructions().end();
    code.function(&create);
    let mut headers = Function::new([]);
    let mut body = headers.instructions();
    for (i, (name, params, typed)) in ABI_0_2_1_ENV.iter().enumerate() {
        if LINKED_NOT_CALLED.contains(name) {
            continue;
        }
        for (p, wide) in params.iter().enumerate() {
            match (p, *wide, *typed) {
                (0, _, true) => body.i32_const(77),
                (_, true, _) => body.i64_const(0),
                _ => body.i32_const(0),
            };
        }
        body.call(i as u32).drop();
    }
    let import = |wanted: &str| {
        ABI_0_2_1_ENV
            .iter()
            .position(|(name, _, _)| *name == wanted)
            .expect("an ABI function") as u32
    };
    // A counter, defined (its id lands at 160) and bumped once per request.
    body.i32_const(0)
        .i32_const(128)
        .i32_const(METRIC.len() as i32)
        .i32_const(160)
        .call(import("proxy_define_metric"))
        .drop()
        .i32_const(160)
        .i32_load(MemArg {
            offset: 0,
            align: 2,
            memory_index: 0,
        })
        .i64_const(1)
        .call(import("proxy_increment_metric"))
        .drop();
    let add = import("proxy_add_header_map_value");
    body.i32_const(0)
        .i32_const(64)
        .i32_const(KEY.len() as i32)
        .i32_const(96)
        .i32_const(VALUE.len() as i32)
        .call(add)
        .drop()
        .i32_const(0)
        .end();
    code.function(&headers);

    let mut module = Module::new();
    module
        .section(&types)
        .section(&imports)
        .section(&functions)
        .section(&memories)
        .section(&exports)
        .section(&code)
        .section(&data);
    module.finish()
}

#[test]
fn a_module_importing_every_env_function_of_abi_0_2_1_links_and_runs() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("every-env-import.wasm");
    std::fs::write(&path, every_env_import_module()).expect("write module");
    let rt = runtime(vec![filter(path)]);
    for _ in 0..3 {
        let mut msg = invite("");
        assert_eq!(
            rt.request_blocking(&mut ctx(), &mut msg),
            Decision::Continue
        );
        assert_eq!(msg.header("X-All-Imports"), Some("linked"));
        assert_eq!(
            msg.header("Call-ID"),
            Some("c1@test"),
            "the message is intact"
        );
    }
    let status = rt.status();
    let counters = &status["tenants"][0]["counters"];
    for failure in ["traps", "timeouts", "out_of_memory", "instantiate_errors"] {
        assert_eq!(counters[failure], json!(0), "{failure}: {counters}");
    }
    // The module's metric feeds the tenant's metrics (filter.list, /metrics).
    let metrics = &status["tenants"][0]["metrics"];
    assert_eq!(metrics["pw_requests"], json!(3), "{metrics}");
}
