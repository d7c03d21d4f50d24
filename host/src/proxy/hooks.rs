//! The door between the proxy and per-tenant filter chains: the proxy calls a
//! [`FilterHooks`] at each routing point and applies the [`Decision`] it returns.

use std::net::SocketAddr;

use siphost_sip::Message;

/// Where a message came from and where the proxy means to send it.
#[derive(Debug, Clone)]
pub struct HookContext {
    /// Transport the message arrived on ("udp" / "tcp").
    pub transport: &'static str,
    /// Source address of the message (after received/rport handling).
    pub source: SocketAddr,
    /// Local listening socket it arrived on.
    pub local: SocketAddr,
    /// Next hop as a SIP URI string (e.g. `sip:127.0.0.1:5090;transport=tcp`);
    /// a filter may change it through [`Decision::Forward`].
    pub next_hop: Option<String>,
    /// Stable key of the dialog this message belongs to (its Call-ID), for host-side
    /// dialog variables that outlive a filter swap.
    pub dialog_key: Option<String>,
    /// Key of the proxy transaction: the same in `on_request`, `on_reply` and `on_failure`
    /// of one forwarded request, unique within this process run.
    pub transaction_key: String,
    /// Extra URI parameters (`;vsf=...;vst=...`) the proxy appends, after `;lr`, to the
    /// Record-Route it inserts for this request. `None`: the proxy does not record-route
    /// (in-dialog requests, or `[proxy].record_route = false`); a filter may set it to
    /// `Some(String::new())` to force record-routing, or back to `None` to prevent it.
    pub record_route_params: Option<String>,
    /// The Route value that named this proxy and was removed by loose routing (in-dialog
    /// requests), so filters can read parameters they put into their Record-Route earlier.
    pub own_route: Option<String>,
}

/// What a filter decided for a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on with the (possibly edited) message.
    Continue,
    /// Go on, sending the request to this next hop (a SIP URI).
    Forward { next_hop: String },
    /// Answer the request locally (requests only).
    Reply {
        code: u16,
        reason: String,
        headers: Vec<(String, String)>,
    },
    /// Drop the message silently.
    Drop,
    /// failure_route only: send the (edited) request again as a new branch.
    Resend { next_hop: Option<String> },
}

/// The hook points the proxy calls. Implemented by the filter runtime; the
/// proxy uses [`NoFilters`] when no tenant applies.
pub trait FilterHooks: Send + Sync {
    /// An incoming request (initial or in-dialog) before routing.
    fn on_request(&self, ctx: &mut HookContext, msg: &mut Message) -> Decision;
    /// A reply received from downstream, before it is relayed upstream.
    fn on_reply(&self, ctx: &mut HookContext, msg: &mut Message) -> Decision;
    /// The best final reply of a client transaction is a failure (≥ 300, or a
    /// local 408/503): Kamailio's failure_route. `request` is the request as it
    /// was sent on that branch; the filter may edit it and return
    /// [`Decision::Resend`].
    fn on_failure(&self, ctx: &mut HookContext, request: &mut Message, reply: &Message)
    -> Decision;
}

/// Hooks that let every message pass untouched.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFilters;

impl FilterHooks for NoFilters {
    fn on_request(&self, _: &mut HookContext, _: &mut Message) -> Decision {
        Decision::Continue
    }
    fn on_reply(&self, _: &mut HookContext, _: &mut Message) -> Decision {
        Decision::Continue
    }
    fn on_failure(&self, _: &mut HookContext, _: &mut Message, _: &Message) -> Decision {
        Decision::Continue
    }
}
