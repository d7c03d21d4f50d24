//! Test proxy-wasm (SDK 0.2) module for the host's limits and ABI corners: on a
//! request with `X-Misbehave: yes` it loops, traps or grows memory without bound
//! (plugin configuration `loop` / `trap` / `oom`); other request headers drive
//! shared queues (`X-Enqueue`), a local reply with a body (`X-Reply-Body`,
//! `X-Reply-Type`) and an HTTP call SIP cannot make (`X-Http-Call`, answered in `X-Http-Call-Result`).
//!
//! Every request it lets through carries `X-Probe-Calls: <n>`, the calls this
//! instance saw (1 again in a fresh instance), and `X-Queue-Ready: <items>`
//! once `on_queue_ready` has run for the tenant's queue `probe`.

use std::cell::Cell;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// The queue this module registers (per tenant in siphost).
const QUEUE: &str = "probe";
/// Shared-data key where `on_queue_ready` records what it dequeued.
const READY_KEY: &str = "probe-queue-ready";

#[derive(Clone, Copy)]
enum Mode {
    None,
    Loop,
    Trap,
    Oom,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::None) };
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

fn misbehave(mode: Mode) {
    match mode {
        Mode::None => {}
        Mode::Loop => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        // `unreachable`: a bare trap.
        Mode::Trap => std::process::abort(),
        Mode::Oom => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
    }
}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let mode = match config.as_slice() {
            b"" | b"none" => Mode::None,
            b"loop" => Mode::Loop,
            b"trap" => Mode::Trap,
            b"oom" => Mode::Oom,
            _ => return false,
        };
        MODE.set(mode);
        self.register_shared_queue(QUEUE);
        true
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        let mut items = Vec::new();
        while let Ok(Some(item)) = self.dequeue_shared_queue(queue_id) {
            items.push(String::from_utf8_lossy(&item).into_owned());
        }
        let (seen, cas) = self.get_shared_data(READY_KEY);
        let mut all = seen.map(|s| String::from_utf8_lossy(&s).into_owned());
        for item in items {
            all = Some(match all {
                Some(before) if !before.is_empty() => format!("{before},{item}"),
                _ => item,
            });
        }
        let all = all.unwrap_or_default();
        // A CAS mismatch (another VM wrote meanwhile) loses this round; the test
        // drives one VM, so it does not happen there.
        let _ = self.set_shared_data(READY_KEY, Some(all.as_bytes()), cas);
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe;

impl Context for Probe {}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.get_http_request_header("x-misbehave").as_deref() == Some("yes") {
            // An edit before failing: the host must undo it.
            self.add_http_request_header("X-Probe-Touched", "yes");
            misbehave(MODE.get());
        }
        CALLS.set(CALLS.get() + 1);
        if let Some(body) = self.get_http_request_header("x-reply-body") {
            let mut headers = vec![("x-probe", "reply")];
            let kind = self.get_http_request_header("x-reply-type");
            if let Some(kind) = kind.as_deref() {
                headers.push(("content-type", kind));
            }
            self.send_http_response(486, headers, Some(body.as_bytes()));
            return Action::Pause;
        }
        if let Some(item) = self.get_http_request_header("x-enqueue") {
            let outcome = match self.resolve_shared_queue("", QUEUE) {
                Some(queue) => match self.enqueue_shared_queue(queue, Some(item.as_bytes())) {
                    Ok(()) => "ok",
                    Err(_) => "refused",
                },
                None => "no-queue",
            };
            self.add_http_request_header("X-Enqueued", outcome);
        }
        if self.get_http_request_header("x-http-call").is_some() {
            let sent = self.dispatch_http_call(
                "upstream",
                vec![
                    (":method", "GET"),
                    (":path", "/"),
                    (":authority", "upstream"),
                ],
                None,
                vec![],
                Duration::from_secs(1),
            );
            let outcome = if sent.is_ok() { "sent" } else { "refused" };
            self.add_http_request_header("X-Http-Call-Result", outcome);
        }
        if let (Some(ready), _) = self.get_shared_data(READY_KEY) {
            self.add_http_request_header("X-Queue-Ready", &String::from_utf8_lossy(&ready));
        }
        self.add_http_request_header("X-Probe-Calls", &CALLS.get().to_string());
        Action::Continue
    }
}
