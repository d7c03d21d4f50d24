// Shared body of the mark-a / mark-b test filters: each marks requests and
// replies with `X-Filter-Version: <MARK>` so a hot-swap test can tell the
// versions apart at the callee, and counts its calls in host dialog state.

wit_bindgen::generate!({ world: "filter", path: "../../../wit" });

use exports::siphost::filter::handler::Guest;
use siphost::filter::dialog_state;
use siphost::filter::metrics;
use siphost::filter::types::{Action, Context, Message};
use siphost::filter::{timers, transport};

struct Mark;

impl Guest for Mark {
    fn configure(config: String) -> Result<(), String> {
        if config.contains("reject") {
            return Err(format!("mark-{MARK}: configuration rejected on request"));
        }
        Ok(())
    }
    fn on_request(ctx: Context, request: &Message) -> Action {
        request.set_header("X-Filter-Version", MARK);
        metrics::counter_add("requests_marked", 1);
        if let Some(dialog) = ctx.dialog_key {
            // Dialog state is host-side: it survives a swap to the other version.
            let seen = dialog_state::dialog_get(&dialog, "versions").unwrap_or_default();
            if !seen.contains(MARK) {
                let _ =
                    dialog_state::dialog_set(&dialog, "versions", Some(&format!("{seen}{MARK}")));
            }
        }
        Action::Continue
    }
    fn on_reply(_ctx: Context, reply: &Message) -> Action {
        reply.set_header("X-Filter-Version", MARK);
        Action::Continue
    }
    fn on_failure(_ctx: Context, _request: &Message, _reply: &Message) -> Action {
        Action::Continue
    }
    fn on_local_reply(_request_id: u64, reply: &Message) {
        let status = reply.status().unwrap_or_default();
        metrics::counter_add(&format!("local_reply_{status}"), 1);
    }
    fn on_timer(token: u64) {
        metrics::counter_add(&format!("timer_{token}"), 1);
    }
    fn rpc(method: String, params: String) -> Result<String, String> {
        match method.as_str() {
            "version" => Ok(format!("\"{MARK}\"")),
            // The versions that handled a dialog so far, from host-side state.
            "dialog-versions" => {
                let versions = dialog_state::dialog_get(&params, "versions").unwrap_or_default();
                Ok(format!("\"{versions}\""))
            }
            // Arms a timer with token 7 firing after `params` ms.
            "timer" => {
                let after = params.trim().parse::<u64>().map_err(|e| e.to_string())?;
                timers::set_timer(after, 7).map(|id| id.to_string())
            }
            // Sends `params` OPTIONS (one for `null`), counting each in `sent` once the
            // call returned; their final replies are counted by on-local-reply.
            "send" => {
                let count = params.trim().parse::<u32>().unwrap_or(1);
                let mut ids = Vec::new();
                for _ in 0..count {
                    let id = transport::send_request(&transport::OutgoingRequest {
                        method: "OPTIONS".into(),
                        request_uri: "sip:probe@127.0.0.1:9".into(),
                        headers: vec![
                            ("From".into(), "<sip:mark@127.0.0.1>;tag=m1".into()),
                            ("To".into(), "<sip:probe@127.0.0.1>".into()),
                            ("Call-ID".into(), "mark-probe".into()),
                            ("CSeq".into(), "1 OPTIONS".into()),
                        ],
                        body: Vec::new(),
                        next_hop: None,
                    })?;
                    metrics::counter_add("sent", 1);
                    ids.push(id.to_string());
                }
                Ok(format!("[{}]", ids.join(",")))
            }
            other => Err(format!("unknown method {other}")),
        }
    }
}

export!(Mark);
