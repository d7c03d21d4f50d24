//! The logic of `examples/proxy-wasm-filter` as a component: `X-Proxy-Wasm:
//! hello` on every request, 403 to User-Agent `blocked-agent`. The proxy-wasm
//! benchmark (bench/proxy_wasm.rs) compares the two ABIs' cost with it.

wit_bindgen::generate!({ world: "filter", path: "../../../wit" });

use exports::siphost::filter::handler::Guest;
use siphost::filter::types::{Action, Context, Message, Reply};

/// The User-Agent this filter answers with 403.
const BLOCKED_AGENT: &str = "blocked-agent";

struct Stamp;

impl Guest for Stamp {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }
    fn on_request(_ctx: Context, request: &Message) -> Action {
        if request.header("User-Agent").as_deref() == Some(BLOCKED_AGENT) {
            return Action::Reply(Reply {
                code: 403,
                reason: "Forbidden".into(),
                headers: vec![("x-blocked-by".into(), "proxy-wasm".into())],
            });
        }
        request.add_header("X-Proxy-Wasm", "hello");
        Action::Continue
    }
    fn on_reply(_ctx: Context, _reply: &Message) -> Action {
        Action::Continue
    }
    fn on_failure(_ctx: Context, _request: &Message, _reply: &Message) -> Action {
        Action::Continue
    }
    fn on_local_reply(_request_id: u64, _reply: &Message) {}
    fn on_timer(_token: u64) {}
    fn rpc(_method: String, _params: String) -> Result<String, String> {
        Ok("null".to_string())
    }
}

export!(Stamp);
