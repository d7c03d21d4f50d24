//! Test filter built against `siphost:filter@0.1.0` as it was before `interest` and
//! `message.endpoint` were added (a frozen copy in `wit/`, never to be edited): a host with
//! additive 0.1 changes must keep loading and running it.

wit_bindgen::generate!({ world: "filter", path: "wit" });

use exports::siphost::filter::handler::Guest;
use siphost::filter::types::{Action, Context, Message};

struct Baseline;

impl Guest for Baseline {
    fn configure(_config: String) -> Result<(), String> {
        Ok(())
    }
    /// Reads through the old imports and writes what it saw into `X-Baseline`.
    fn on_request(ctx: Context, request: &Message) -> Action {
        let seen = format!(
            "{} {} from {}",
            ctx.tenant,
            request.method().unwrap_or_default(),
            request.source().address
        );
        request.add_header("X-Baseline", &seen);
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

export!(Baseline);
