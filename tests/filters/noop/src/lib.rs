//! Test filter that does nothing: every hook continues. The runtime benchmark
//! measures the host's per-message overhead with it.

wit_bindgen::generate!({ world: "filter", path: "../../../wit" });

use exports::siphost::filter::handler::Guest;
use siphost::filter::types::{Action, Context, Message};

struct Noop;

impl Guest for Noop {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }
    fn on_request(_ctx: Context, _request: &Message) -> Action {
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

export!(Noop);
