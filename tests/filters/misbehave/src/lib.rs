//! Test filter that misbehaves on purpose so the runtime's limits and failure
//! policies can be proven: it loops forever, traps, allocates without bound or
//! panics, or (mode "spin") does `iterations` of busy work and then goes on normally.
//!
//! Config: `{"mode": "loop" | "trap" | "oom" | "panic" | "spin", "trigger": "always" | "header",
//! "iterations": n}`.
//! With trigger "header" (default) it misbehaves only on requests carrying
//! `X-Misbehave: yes`; other requests count in `rpc("calls")`, which restarts
//! at 0 in a fresh instance.

wit_bindgen::generate!({ world: "filter", path: "../../../wit" });

use std::cell::Cell;

use exports::siphost::filter::handler::Guest;
use siphost::filter::types::{Action, Context, Message};

#[derive(Clone, Copy)]
enum Mode {
    Loop,
    Trap,
    Oom,
    Panic,
    Spin,
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Trap) };
    static ALWAYS: Cell<bool> = const { Cell::new(false) };
    static CALLS: Cell<u64> = const { Cell::new(0) };
    static ITERATIONS: Cell<u64> = const { Cell::new(0) };
}

fn misbehave(mode: Mode) {
    match mode {
        Mode::Loop => {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        // On wasm32 `abort` is the `unreachable` instruction: a bare trap, no panic machinery.
        Mode::Trap => std::process::abort(),
        Mode::Oom => {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        Mode::Panic => panic!("misbehave filter panics on purpose"),
        Mode::Spin => {
            let mut n: u64 = 0;
            for _ in 0..ITERATIONS.get() {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
    }
}

struct Misbehave;

impl Guest for Misbehave {
    fn configure(config: String) -> Result<(), String> {
        let value: serde_json::Value =
            serde_json::from_str(&config).map_err(|e| format!("misbehave config: {e}"))?;
        let mode = match value.get("mode").and_then(|m| m.as_str()) {
            Some("loop") => Mode::Loop,
            Some("trap") => Mode::Trap,
            Some("oom") => Mode::Oom,
            Some("panic") => Mode::Panic,
            Some("spin") => Mode::Spin,
            other => return Err(format!("misbehave config: bad mode {other:?}")),
        };
        let always = match value.get("trigger").and_then(|t| t.as_str()) {
            None | Some("header") => false,
            Some("always") => true,
            Some(other) => return Err(format!("misbehave config: bad trigger {other:?}")),
        };
        ITERATIONS.set(
            value
                .get("iterations")
                .and_then(|n| n.as_u64())
                .unwrap_or(0),
        );
        MODE.set(mode);
        ALWAYS.set(always);
        Ok(())
    }
    fn on_request(_ctx: Context, request: &Message) -> Action {
        if ALWAYS.get() || request.header("X-Misbehave").as_deref() == Some("yes") {
            // An edit before failing: the host must undo it (fail-open sends
            // the message on untouched).
            request.set_header("X-Misbehave-Touched", "yes");
            misbehave(MODE.get());
        }
        CALLS.set(CALLS.get() + 1);
        request.set_header("X-Misbehave-Calls", &CALLS.get().to_string());
        Action::Continue
    }
    fn on_reply(_ctx: Context, reply: &Message) -> Action {
        if ALWAYS.get() || reply.header("X-Misbehave").as_deref() == Some("yes") {
            misbehave(MODE.get());
        }
        Action::Continue
    }
    fn on_failure(_ctx: Context, _request: &Message, _reply: &Message) -> Action {
        Action::Continue
    }
    fn on_local_reply(_request_id: u64, _reply: &Message) {}
    fn on_timer(_token: u64) {}
    fn rpc(method: String, _params: String) -> Result<String, String> {
        match method.as_str() {
            "calls" => Ok(CALLS.get().to_string()),
            other => Err(format!("unknown method {other}")),
        }
    }
}

export!(Misbehave);
