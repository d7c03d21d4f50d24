//! The `uac` filter (Kamailio's uac module) as a siphost wasm component.
//! For now a pass-through skeleton: it validates its configuration and lets every message go on.

pub mod digest;

wit_bindgen::generate!({ world: "filter", path: "../wit" });

use std::cell::RefCell;

use exports::siphost::filter::handler::Guest;
use serde::Deserialize;
use siphost::filter::log::{self, Level};
use siphost::filter::types::{Action, Context, Message};

/// The filter's options (Kamailio modparam names will join as the uac issues
/// land). Unknown keys are an error so that typos do not pass silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Log every request and reply at debug level.
    #[serde(default)]
    log_messages: bool,
}

thread_local! {
    static OPTIONS: RefCell<Options> = RefCell::new(Options::default());
}

struct UacFilter;

impl Guest for UacFilter {
    fn configure(config: String) -> Result<(), String> {
        let text = if config.trim().is_empty() {
            "{}"
        } else {
            config.as_str()
        };
        let options: Options =
            serde_json::from_str(text).map_err(|e| format!("uac filter config: {e}"))?;
        OPTIONS.with(|o| *o.borrow_mut() = options);
        Ok(())
    }

    fn on_request(ctx: Context, request: &Message) -> Action {
        if OPTIONS.with(|o| o.borrow().log_messages) {
            let method = request.method().unwrap_or_default();
            let uri = request.request_uri().unwrap_or_default();
            log::write(
                Level::Debug,
                &format!(
                    "{} request {method} {uri} (in-dialog: {})",
                    ctx.tenant, ctx.in_dialog
                ),
            );
        }
        Action::Continue
    }

    fn on_reply(ctx: Context, reply: &Message) -> Action {
        if OPTIONS.with(|o| o.borrow().log_messages) {
            let status = reply.status().unwrap_or_default();
            log::write(Level::Debug, &format!("{} reply {status}", ctx.tenant));
        }
        Action::Continue
    }

    fn on_failure(_ctx: Context, _request: &Message, _reply: &Message) -> Action {
        Action::Continue
    }

    fn on_local_reply(_request_id: u64, _reply: &Message) {}

    fn on_timer(_token: u64) {}

    fn rpc(method: String, _params: String) -> Result<String, String> {
        Err(format!("uac filter: unknown rpc method {method:?}"))
    }
}

export!(UacFilter);
