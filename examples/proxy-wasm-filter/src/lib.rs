//! An unchanged proxy-wasm SDK filter run by siphost on SIP: it stamps every
//! request with `X-Proxy-Wasm: hello` and refuses the User-Agent `blocked-agent`.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

/// The User-Agent this filter answers with 403.
const BLOCKED_AGENT: &str = "blocked-agent";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stamp))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per request: the verdict on its headers.
struct Stamp;

impl Context for Stamp {}

impl HttpContext for Stamp {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.get_http_request_header("user-agent").as_deref() == Some(BLOCKED_AGENT) {
            self.send_http_response(403, vec![("x-blocked-by", "proxy-wasm")], None);
            return Action::Pause;
        }
        self.add_http_request_header("X-Proxy-Wasm", "hello");
        Action::Continue
    }
}
