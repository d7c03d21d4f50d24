//! Stateless forwarding (§16.11): requests no transaction takes (2xx ACKs, CANCELs without a
//! context) and responses matching no transaction.

use super::*;

pub(super) struct ParkedStateless {
    pub(super) source: Source,
    pub(super) reply_to: SocketAddr,
    /// The request as received, to answer it locally (None for ACKs, never answered).
    pub(super) original: Option<Message>,
    pub(super) branch: String,
    pub(super) preliminary: Option<String>,
}

/// Where a response goes by its (top) Via, RFC 3261 §18.2.2 with RFC 3581.
pub(super) fn via_destination(via: &Via<'_>) -> Option<(TransportKind, SocketAddr)> {
    let kind = via_transport(via.transport)?;
    let host = via.received().unwrap_or(via.host);
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let port = match via.rport() {
        Some(Some(port)) => port,
        _ => via.port.unwrap_or(5060),
    };
    Some((kind, SocketAddr::new(ip, port)))
}

impl Core {
    /// §16.11 stateless forwarding along the route set, for requests no transaction takes:
    /// ACKs for 2xx and CANCELs without a response context (§16.10). The branch is derived
    /// from the upstream transaction's identity, so retransmissions leave with the same one.
    pub(super) fn forward_stateless(
        &mut self,
        mut msg: Message,
        source: Source,
        reply_to: SocketAddr,
        now: Instant,
    ) {
        // An ACK has no response: whatever would be answered is dropped instead.
        let is_ack = msg.method() == Some(&Method::Ack);
        let Some((upstream_branch, branch)) = msg.top_via().map(|via| {
            let key = ServerKey::new(&msg, &via, "INVITE");
            let upstream = via.branch().unwrap_or_default().to_owned();
            (upstream, stateless_branch(key.branch_and_sent_by()))
        }) else {
            return;
        };
        // §16.3 step 3.
        if msg.max_forwards() == Some(0) {
            if !is_ack {
                self.reply_stateless(&msg, source, reply_to, 483);
            }
            return;
        }
        // Local answers are built from the request as received, not as routed and filtered;
        // ACKs, the bulk of this path, never get one, so they skip the copy.
        let original = (!is_ack).then(|| msg.clone());
        let hook = self.routed_hook_context(&mut msg, &source, upstream_branch, None);
        let parked = ParkedStateless {
            source,
            reply_to,
            original,
            branch,
            preliminary: hook.next_hop.clone(),
        };
        let call = HookCall::Request { ctx: hook, msg };
        self.submit_hook(call, Parked::Stateless(parked), now);
    }

    /// The filters decided on a request forwarded without a transaction.
    pub(super) fn stateless_decided(
        &mut self,
        parked: ParkedStateless,
        result: HookResult,
        now: Instant,
    ) {
        let ParkedStateless {
            source,
            reply_to,
            original,
            branch,
            preliminary,
        } = parked;
        let HookResult {
            call: HookCall::Request { ctx: hook, mut msg },
            decision,
        } = result
        else {
            tracing::warn!("filters answered a request call with another kind; dropped");
            return;
        };
        let next_hop = match decision {
            Decision::Drop => return,
            Decision::Reply {
                code,
                reason,
                headers,
                body,
            } => {
                if let Some(original) = &original {
                    let headers: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    self.reply_stateless_with(
                        original, source, reply_to, code, &reason, &headers, body,
                    );
                }
                return;
            }
            Decision::Forward { next_hop } => Some(next_hop),
            Decision::Continue | Decision::Resend { .. } => {
                if hook.next_hop != preliminary {
                    hook.next_hop
                } else {
                    self.router.next_hop(&msg, &self.us).ok()
                }
            }
        };
        let Some(next_hop) = next_hop else {
            tracing::debug!("stateless request without a route");
            if let Some(original) = &original {
                self.reply_stateless(original, source, reply_to, 404);
            }
            return;
        };
        let forwards = match msg.max_forwards() {
            Some(n) => n.saturating_sub(1),
            None => self.max_forwards,
        };
        msg.set_header("Max-Forwards", &forwards.to_string());
        self.dispatch(
            &next_hop,
            Job::Stateless {
                request: msg,
                branch,
                inbound: source.listener,
            },
            now,
        );
    }

    /// §16.7 for responses matching no transaction, and §18.2.2 routing: remove our Via and
    /// send to the next one.
    pub(super) fn forward_response_statelessly(&mut self, response: Message) {
        let Some((kind, addr)) = response.top_via().as_ref().and_then(via_destination) else {
            tracing::debug!("response with no usable Via dropped");
            return;
        };
        let Some(listener) = pick_listener(&self.listeners, kind, None, &addr) else {
            return;
        };
        self.transmit(kind, listener, addr, None, response.to_bytes());
    }
}
