//! The server side: server transactions (RFC 3261 §17.2) of received requests, their checks
//! (§16.3), the request hook, local answers, and CANCEL matching (§16.10).

use super::*;

/// RFC 3261 §17.2.3 server transaction key: branch, sent-by and method (ACK → INVITE), in
/// one string (one allocation per message, not one per part and per lower-casing).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct ServerKey(Box<str>);

impl ServerKey {
    pub(super) fn new(msg: &Message, via: &Via<'_>, method: &str) -> ServerKey {
        use std::fmt::Write as _;
        let mut key = String::with_capacity(
            via.branch().map_or(64, str::len) + via.host.len() + method.len() + 8,
        );
        match via.branch() {
            Some(b) if b.starts_with(MAGIC_COOKIE) => key.push_str(b),
            // RFC 2543 peers: fall back to the dialog and sequence identifiers.
            _ => {
                let _ = write!(
                    key,
                    "2543|{}|{}|{}",
                    msg.call_id().unwrap_or(""),
                    msg.from_tag().unwrap_or(""),
                    msg.cseq().map_or(0, |(n, _)| n)
                );
            }
        }
        // Neither a branch (a token) nor a host holds a space.
        key.push(' ');
        key.extend(via.host.chars().map(|c| c.to_ascii_lowercase()));
        let _ = write!(key, ":{} {method}", via.port.unwrap_or(5060));
        ServerKey(key.into_boxed_str())
    }

    /// The key without its method.
    pub(super) fn branch_and_sent_by(&self) -> &str {
        self.0.rsplit_once(' ').map_or(&self.0, |(head, _)| head)
    }
}

pub(super) struct ServerEntry {
    pub(super) machine: ServerTransaction,
    pub(super) key: ServerKey,
    pub(super) source: Source,
    /// Where responses go when the request's connection is gone or for UDP (RFC 3581).
    pub(super) reply_to: SocketAddr,
    /// The request as received; kept until a final response, to build local responses.
    pub(super) request: Option<Message>,
    pub(super) last_response: Option<Bytes>,
    pub(super) context: Option<ContextId>,
    /// A CANCEL arrived while the request waited for its filters: answer 487, do not forward.
    pub(super) cancelled: bool,
}

pub(super) struct ParkedRequest {
    pub(super) server: ServerId,
    pub(super) ctx: ContextId,
    pub(super) loop_hash: u64,
    pub(super) is_invite: bool,
    /// The next hop static routing chose before the filters ran.
    pub(super) preliminary: Option<String>,
    pub(super) ruri_before: Option<String>,
}

impl Core {
    pub(super) fn on_request(&mut self, mut msg: Message, source: Source, now: Instant) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        // RFC 3581 / §18.2.1: record where the request really came from.
        let reply_to = {
            let Some(via) = msg.top_via() else {
                return;
            };
            let via_ip = via
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok();
            let rport = via.rport();
            let add_received = via_ip != Some(source.remote.ip()) || rport.is_some();
            let fill_rport = rport == Some(None);
            let reply_to = match (rport, via_ip) {
                (Some(_), _) => source.remote,
                (None, Some(_)) | (None, None) => {
                    SocketAddr::new(source.remote.ip(), via.port.unwrap_or(5060))
                }
            };
            if add_received {
                msg.set_top_via_param("received", Some(&source.remote.ip().to_string()));
            }
            if fill_rport {
                msg.set_top_via_param("rport", Some(&source.remote.port().to_string()));
            }
            reply_to
        };
        let Some(via) = msg.top_via() else {
            return;
        };
        match method {
            Method::Ack => {
                let key = ServerKey::new(&msg, &via, "INVITE");
                match self.server_index.get(&key).copied() {
                    Some(id) => {
                        if let Some(entry) = self.servers.get_mut(&id) {
                            let _ = entry.machine.on_ack(now);
                        }
                        if self.drive_server(id) {
                            self.forward_stateless(msg, source, reply_to, now);
                        }
                    }
                    None => {
                        if self.admit(&mut msg, &source, reply_to).is_some() {
                            self.forward_stateless(msg, source, reply_to, now);
                        }
                    }
                }
            }
            Method::Cancel => {
                if self.admit(&mut msg, &source, reply_to).is_some() {
                    self.on_cancel(msg, source, reply_to, now);
                }
            }
            _ => {
                let key = ServerKey::new(&msg, &via, method.as_str());
                if let Some(id) = self.server_index.get(&key).copied() {
                    if let Some(entry) = self.servers.get_mut(&id) {
                        let _ = entry.machine.on_request_retransmit(now);
                    }
                    self.drive_server(id);
                    return;
                }
                // After the retransmission check: a retransmitted authorised request must
                // not count as a replay of its nonce.
                let Some(endpoint) = self.admit(&mut msg, &source, reply_to) else {
                    return;
                };
                self.new_request(msg, key, method, source, reply_to, endpoint, now);
            }
        }
    }

    /// A response sent without a transaction (errors before one exists).
    pub(super) fn reply_stateless(
        &mut self,
        request: &Message,
        source: Source,
        reply_to: SocketAddr,
        status: u16,
    ) {
        let reason = reason_for(status);
        self.reply_stateless_with(request, source, reply_to, status, reason, &[], Bytes::new());
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn reply_stateless_with(
        &mut self,
        request: &Message,
        source: Source,
        reply_to: SocketAddr,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) {
        ProxyStats::bump(&self.stats.local_replies);
        let tag = (status > 100).then(|| self.new_tag());
        let mut response = request.response(status, reason, tag.as_deref());
        for (name, value) in headers {
            response.append_header(name, value);
        }
        if !body.is_empty() {
            response.set_body(body, None);
        }
        self.send_to_source(source, reply_to, response.to_bytes());
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_request(
        &mut self,
        msg: Message,
        key: ServerKey,
        method: Method,
        source: Source,
        reply_to: SocketAddr,
        endpoint: Option<Arc<str>>,
        now: Instant,
    ) {
        if self.draining.is_some() {
            self.reply_stateless(&msg, source, reply_to, 503);
            return;
        }
        // §16.3 step 3: Max-Forwards.
        if msg.max_forwards() == Some(0) {
            self.reply_stateless(&msg, source, reply_to, 483);
            return;
        }
        // §16.3 step 5: this proxy supports no extension, so every option-tag in Proxy-Require
        // is unsupported. ACK and CANCEL are exempt (§8.2.2.3).
        if !matches!(method, Method::Ack | Method::Cancel) {
            let unsupported: Vec<&str> = msg
                .header_values("Proxy-Require")
                .map(str::trim)
                .filter(|tag| !tag.is_empty())
                .collect();
            if !unsupported.is_empty() {
                let tags = unsupported.join(", ");
                let unsupported = [("Unsupported", tags.as_str())];
                self.reply_stateless_with(
                    &msg,
                    source,
                    reply_to,
                    420,
                    reason_for(420),
                    &unsupported,
                    Bytes::new(),
                );
                return;
            }
        }
        // §16.3 step 4: loop detection.
        let hash = loop_hash(&msg);
        if is_loop(&msg, &self.us, hash) {
            self.reply_stateless(&msg, source, reply_to, 482);
            return;
        }
        let kind = kind_of(&method);
        let server_id = ServerId(self.next_id());
        let machine =
            ServerTransaction::new(kind, source.kind.is_reliable(), self.timer_config, now);
        self.server_index.insert(key.clone(), server_id);
        self.servers.insert(
            server_id,
            Box::new(ServerEntry {
                machine,
                key,
                source,
                reply_to,
                request: Some(msg.clone()),
                last_response: None,
                context: None,
                cancelled: false,
            }),
        );
        self.drive_server(server_id);

        // §16.4: route information preprocessing.
        let mut request = msg;
        let ctx_id = ContextId(self.next_id());
        let record_route_params =
            (self.record_route && wants_record_route(&request)).then(String::new);
        let mut hook = self.routed_hook_context(
            &mut request,
            &source,
            self.transaction_key(ctx_id),
            record_route_params,
        );
        hook.endpoint = endpoint;
        let parked = ParkedRequest {
            server: server_id,
            ctx: ctx_id,
            loop_hash: hash,
            is_invite: kind == Kind::Invite,
            preliminary: hook.next_hop.clone(),
            ruri_before: request.request_uri().map(str::to_owned),
        };
        let call = HookCall::Request {
            ctx: hook,
            msg: request,
        };
        self.submit_hook(call, Parked::Request(parked), now);
    }

    /// The filters decided on a new request: answer it, drop it, or open its response
    /// context and forward it.
    pub(super) fn request_decided(
        &mut self,
        parked: ParkedRequest,
        result: HookResult,
        now: Instant,
    ) {
        let ParkedRequest {
            server: server_id,
            ctx: ctx_id,
            loop_hash: hash,
            is_invite,
            preliminary,
            ruri_before,
        } = parked;
        let HookResult {
            call:
                HookCall::Request {
                    ctx: mut hook,
                    msg: mut request,
                },
            decision,
        } = result
        else {
            tracing::warn!("filters answered a request call with another kind; dropped");
            self.remove_server(server_id);
            return;
        };
        match self.servers.get(&server_id) {
            // The transaction ended while the filters decided: nothing to answer any more.
            None => return,
            Some(entry) if entry.cancelled => {
                self.respond_local(server_id, 487, now);
                return;
            }
            Some(_) => {}
        }
        let next_hop = match decision {
            Decision::Drop => {
                tracing::debug!("request dropped by filter");
                self.remove_server(server_id);
                return;
            }
            Decision::Reply {
                code,
                reason,
                headers,
                body,
            } => {
                let tag = (code > 100).then(|| self.new_tag());
                let Some(entry) = self.servers.get(&server_id) else {
                    return;
                };
                let Some(original) = &entry.request else {
                    return;
                };
                let mut response = original.response(code, &reason, tag.as_deref());
                for (name, value) in &headers {
                    response.append_header(name, value);
                }
                if !body.is_empty() {
                    response.set_body(body, None);
                }
                ProxyStats::bump(&self.stats.local_replies);
                self.respond(server_id, response, now);
                return;
            }
            Decision::Forward { next_hop } => Ok(next_hop),
            Decision::Resend { .. } | Decision::Continue => {
                if hook.next_hop != preliminary {
                    hook.next_hop.clone().ok_or(())
                } else if request.request_uri() != ruri_before.as_deref() {
                    self.router.next_hop(&request, &self.us).map_err(|_| ())
                } else {
                    preliminary.ok_or(())
                }
            }
        };
        let Ok(next_hop) = next_hop else {
            self.respond_local(server_id, 404, now);
            return;
        };
        // §16.6 step 3: Max-Forwards.
        let forwards = match request.max_forwards() {
            Some(n) => n.saturating_sub(1),
            None => self.max_forwards,
        };
        request.set_header("Max-Forwards", itoa::Buffer::new().format(forwards));
        hook.next_hop = Some(next_hop.clone());
        self.contexts.insert(
            ctx_id,
            Box::new(Context {
                server: server_id,
                hook,
                request: request.clone(),
                loop_hash: hash,
                is_invite,
                branches: Vec::new(),
                outstanding: 1,
                best: None,
                final_sent: false,
                cancelled: false,
                resends: 0,
                hook_busy: false,
                queued_replies: VecDeque::new(),
                established: false,
            }),
        );
        if let Some(entry) = self.servers.get_mut(&server_id) {
            entry.context = Some(ctx_id);
        }
        self.dispatch(
            &next_hop,
            Job::Branch {
                ctx: ctx_id,
                request,
                fresh: true,
            },
            now,
        );
    }

    /// Answers on a server transaction with a response built from its original request.
    pub(super) fn respond_local(&mut self, server_id: ServerId, status: u16, now: Instant) {
        let tag = self.new_tag();
        let Some(response) = self
            .servers
            .get(&server_id)
            .and_then(|e| e.request.as_ref())
            .map(|r| r.response(status, reason_for(status), Some(&tag)))
        else {
            return;
        };
        ProxyStats::bump(&self.stats.local_replies);
        self.respond(server_id, response, now);
    }

    /// Sends a response upstream on a server transaction. Without a live transaction (it
    /// ended) the response is forwarded statelessly by its Via.
    pub(super) fn respond(&mut self, server_id: ServerId, response: Message, now: Instant) {
        let Some(status) = response.status() else {
            return;
        };
        let Some(entry) = self.servers.get_mut(&server_id) else {
            self.forward_response_statelessly(response);
            return;
        };
        if let Err(e) = entry.machine.send_response(status, now) {
            tracing::debug!(status, error = %e, "response not sent");
            return;
        }
        if status >= 200 {
            entry.request = None;
        }
        let bytes = response.to_bytes();
        let (source, reply_to) = (entry.source, entry.reply_to);
        // An INVITE server never resends a 2xx itself (RFC 6026 "Accepted").
        let resendable = !(entry.machine.kind() == Kind::Invite && (200..300).contains(&status));
        entry.last_response = resendable.then(|| bytes.clone());
        let conn = self.transmit(source.kind, source.listener, reply_to, source.conn, bytes);
        if let (Some(conn), Some(entry)) = (conn, self.servers.get_mut(&server_id)) {
            entry.source.conn = Some(conn);
        }
        self.drive_server(server_id);
    }

    /// Performs a server machine's actions. Returns true when an ACK was passed up.
    pub(super) fn drive_server(&mut self, id: ServerId) -> bool {
        let mut ack_passed_up = false;
        loop {
            let Some(entry) = self.servers.get_mut(&id) else {
                return ack_passed_up;
            };
            let Some(action) = entry.machine.poll_action() else {
                let (at, waiting) = (entry.machine.poll_timeout(), entry.machine.only_waiting());
                self.set_machine_timer(TimerKey::Server(id), at, waiting);
                return ack_passed_up;
            };
            match action {
                ServerAction::SendTrying => {
                    if let Some(request) = &entry.request {
                        let bytes = request.response(100, "Trying", None).to_bytes();
                        entry.last_response = Some(bytes.clone());
                        let (source, reply_to) = (entry.source, entry.reply_to);
                        self.send_to_source(source, reply_to, bytes);
                    }
                }
                ServerAction::Transmit => {
                    if let Some(bytes) = entry.last_response.clone() {
                        let (source, reply_to) = (entry.source, entry.reply_to);
                        self.send_to_source(source, reply_to, bytes);
                    }
                }
                ServerAction::PassUpAck => ack_passed_up = true,
                ServerAction::Absorb | ServerAction::TransportError => {}
                ServerAction::Timeout => {
                    tracing::debug!("no ACK for a final response");
                }
                ServerAction::Terminated => {
                    self.remove_server(id);
                    return ack_passed_up;
                }
            }
        }
    }

    pub(super) fn remove_server(&mut self, id: ServerId) {
        if let Some(entry) = self.servers.remove(&id) {
            if self.server_index.get(&entry.key) == Some(&id) {
                self.server_index.remove(&entry.key);
            }
            self.timers.cancel(&TimerKey::Server(id));
        }
    }

    pub(super) fn on_cancel(
        &mut self,
        msg: Message,
        source: Source,
        reply_to: SocketAddr,
        now: Instant,
    ) {
        let Some(via) = msg.top_via() else {
            return;
        };
        let cancel_key = ServerKey::new(&msg, &via, "CANCEL");
        let invite_key = ServerKey::new(&msg, &via, "INVITE");
        if let Some(id) = self.server_index.get(&cancel_key).copied() {
            if let Some(entry) = self.servers.get_mut(&id) {
                let _ = entry.machine.on_request_retransmit(now);
            }
            self.drive_server(id);
            return;
        }
        let Some(invite_id) = self.server_index.get(&invite_key).copied() else {
            // §16.10: without a response context we know nothing of the request; it may have
            // gone by statelessly, so the CANCEL MUST follow it the same way.
            self.forward_stateless(msg, source, reply_to, now);
            return;
        };
        let server_id = ServerId(self.next_id());
        let machine = ServerTransaction::new(
            Kind::NonInvite,
            source.kind.is_reliable(),
            self.timer_config,
            now,
        );
        self.server_index.insert(cancel_key.clone(), server_id);
        self.servers.insert(
            server_id,
            Box::new(ServerEntry {
                machine,
                key: cancel_key,
                source,
                reply_to,
                request: Some(msg),
                last_response: None,
                context: None,
                cancelled: false,
            }),
        );
        self.respond_local(server_id, 200, now);
        let Some(invite) = self.servers.get_mut(&invite_id) else {
            return;
        };
        match invite.context {
            Some(ctx) => self.cancel_context(ctx, now),
            // Still with its filters (or already answered): it will not be forwarded.
            None => invite.cancelled = true,
        }
    }
}
