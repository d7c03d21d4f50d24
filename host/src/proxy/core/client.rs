//! The client side: client transactions (§17.1) of forwarded and local requests, their ACKs
//! and CANCELs, and responses matched to them.

use super::*;

/// Client transaction key: our branch, and whether it is the CANCEL sharing an INVITE's branch.
pub(super) type ClientKey = (Box<str>, bool);

/// Where a client transaction sends: transport, our socket, the peer, the TCP connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Destination {
    pub(super) kind: TransportKind,
    pub(super) listener: usize,
    pub(super) remote: SocketAddr,
    pub(super) conn: Option<ConnId>,
}

pub(super) enum Owner {
    /// A branch of a proxied request.
    Branch(ContextId),
    /// A request from a [`super::ProxyHandle`].
    Local(LocalOwner),
    /// A CANCEL we generated; its response ends here.
    Cancel,
}

/// Who waits for a locally originated request's final response.
pub(super) struct LocalOwner {
    /// Taken when the final response (or the failure) is delivered.
    pub(super) reply: Option<ReplySink>,
    /// Kamailio's fr_inv_timeout: each provisional response to the INVITE restarts it.
    pub(super) invite_timeout: Option<Duration>,
}

pub(super) struct ClientEntry {
    pub(super) machine: ClientTransaction,
    pub(super) key: ClientKey,
    /// The request as sent (None for generated CANCELs).
    pub(super) request: Option<Message>,
    pub(super) bytes: Bytes,
    pub(super) dest: Destination,
    pub(super) owner: Owner,
    pub(super) provisional: bool,
    pub(super) cancel_on_provisional: bool,
    pub(super) finished: bool,
}

/// The hop-by-hop ACK for a 3xx–6xx final response to `request` (RFC 3261 §17.1.1.3): its To
/// is the response's, which carries the callee's tag.
pub(super) fn build_ack(request: &Message, response: &Message) -> Option<Bytes> {
    build_same_branch(request, Method::Ack, response.header("To")?)
}

/// A CANCEL for a request sent on a branch (RFC 3261 §9.1).
pub(super) fn build_cancel(request: &Message) -> Option<Bytes> {
    build_same_branch(request, Method::Cancel, request.header("To")?)
}

/// A request on the same branch as `request` (ACK for a non-2xx, CANCEL): same R-URI, top
/// Via, Route, From, Call-ID and CSeq number, with the method and To given.
pub(super) fn build_same_branch(request: &Message, method: Method, to: &str) -> Option<Bytes> {
    let (cseq, _) = request.cseq()?;
    let cseq = format!("{cseq} {}", method.as_str());
    let mut out = Message::request(method, request.request_uri()?);
    out.append_header("Via", request.header_values("Via").next()?);
    for route in request.headers("Route") {
        out.append_header("Route", route);
    }
    out.append_header("Max-Forwards", "70");
    out.append_header("From", request.header("From")?);
    out.append_header("To", to);
    out.append_header("Call-ID", request.call_id()?);
    out.append_header("CSeq", &cseq);
    Some(out.to_bytes())
}

impl Core {
    pub(super) fn cancel_branch(&mut self, id: ClientId, now: Instant) {
        let Some(entry) = self.clients.get_mut(&id) else {
            return;
        };
        if entry.finished || entry.machine.kind() != Kind::Invite {
            return;
        }
        if !entry.provisional {
            entry.cancel_on_provisional = true;
            return;
        }
        entry.cancel_on_provisional = false;
        let Some(request) = &entry.request else {
            return;
        };
        let Some(bytes) = build_cancel(request) else {
            return;
        };
        let key: ClientKey = (entry.key.0.clone(), true);
        if self.client_index.contains_key(&key) {
            return;
        }
        let dest = entry.dest;
        let cancel_id = ClientId(self.next_id());
        let machine = ClientTransaction::new(
            Kind::NonInvite,
            dest.kind.is_reliable(),
            self.timer_config,
            now,
        );
        self.client_index.insert(key.clone(), cancel_id);
        self.clients.insert(
            cancel_id,
            Box::new(ClientEntry {
                machine,
                key,
                request: None,
                bytes,
                dest,
                owner: Owner::Cancel,
                provisional: false,
                cancel_on_provisional: false,
                finished: false,
            }),
        );
        self.drive_client(cancel_id, None, now);
    }

    pub(super) fn start_client(
        &mut self,
        key: ClientKey,
        kind: Kind,
        request: Message,
        dest: Destination,
        owner: Owner,
        now: Instant,
    ) -> ClientId {
        let id = ClientId(self.next_id());
        let machine = ClientTransaction::new(kind, dest.kind.is_reliable(), self.timer_config, now);
        let bytes = request.to_bytes();
        self.client_index.insert(key.clone(), id);
        self.clients.insert(
            id,
            Box::new(ClientEntry {
                machine,
                key,
                request: Some(request),
                bytes,
                dest,
                owner,
                provisional: false,
                cancel_on_provisional: false,
                finished: false,
            }),
        );
        self.drive_client(id, None, now);
        id
    }

    pub(super) fn remove_client(&mut self, id: ClientId) {
        if let Some(entry) = self.clients.remove(&id) {
            if self.client_index.get(&entry.key) == Some(&id) {
                self.client_index.remove(&entry.key);
            }
            self.timers.cancel(&TimerKey::Client(id));
            self.timers.cancel(&TimerKey::ProxyC(id));
        }
    }

    /// Performs a client machine's actions; `response` is the response just fed to it.
    pub(super) fn drive_client(
        &mut self,
        id: ClientId,
        mut response: Option<Message>,
        now: Instant,
    ) {
        loop {
            let Some(entry) = self.clients.get_mut(&id) else {
                return;
            };
            let Some(action) = entry.machine.poll_action() else {
                let (at, waiting) = (entry.machine.poll_timeout(), entry.machine.only_waiting());
                self.set_machine_timer(TimerKey::Client(id), at, waiting);
                return;
            };
            match action {
                ClientAction::Transmit => {
                    let dest = entry.dest;
                    let bytes = entry.bytes.clone();
                    let conn =
                        self.transmit(dest.kind, dest.listener, dest.remote, dest.conn, bytes);
                    // A connection that fails comes back as a Closed event naming it.
                    if let (Some(conn), Some(entry)) = (conn, self.clients.get_mut(&id)) {
                        entry.dest.conn = Some(conn);
                    }
                }
                ClientAction::SendAck => {
                    let ack = match (&entry.request, &response) {
                        (Some(request), Some(resp)) => build_ack(request, resp),
                        _ => None,
                    };
                    if let Some(ack) = ack {
                        let dest = entry.dest;
                        self.transmit(dest.kind, dest.listener, dest.remote, dest.conn, ack);
                    }
                }
                ClientAction::PassUp(status) => {
                    if let Some(resp) = response.take() {
                        self.pass_up(id, status, resp, now);
                    }
                }
                ClientAction::Absorb => {}
                ClientAction::Timeout => self.client_failed(id, 408, now),
                ClientAction::TransportError => self.client_failed(id, 503, now),
                ClientAction::Terminated => {
                    self.remove_client(id);
                    return;
                }
            }
        }
    }

    /// A client transaction ended without a final response: time-out or transport error.
    pub(super) fn client_failed(&mut self, id: ClientId, status: u16, now: Instant) {
        let Some(entry) = self.clients.get_mut(&id) else {
            return;
        };
        if entry.finished {
            return;
        }
        entry.finished = true;
        match &mut entry.owner {
            Owner::Branch(ctx) => {
                let ctx = *ctx;
                self.branch_failed(ctx, Some(id), status, now);
            }
            Owner::Local(local) => {
                if let Some(reply) = local.reply.take() {
                    let error = if status == 408 {
                        SendError::Timeout
                    } else {
                        SendError::Transport(entry.dest.remote)
                    };
                    reply.send(Err(error));
                }
            }
            Owner::Cancel => {}
        }
    }

    pub(super) fn pass_up(&mut self, id: ClientId, status: u16, response: Message, now: Instant) {
        let Some(entry) = self.clients.get_mut(&id) else {
            return;
        };
        match &mut entry.owner {
            Owner::Cancel => {}
            Owner::Local(local) => {
                if status >= 200 {
                    entry.finished = true;
                    self.timers.cancel(&TimerKey::ProxyC(id));
                    if let Some(reply) = local.reply.take() {
                        reply.send(Ok(Answered {
                            response,
                            transport: entry.dest.kind,
                            peer: entry.dest.remote,
                        }));
                    }
                } else if entry.machine.kind() == Kind::Invite {
                    // §16.8's Timer C guards a local INVITE too: a callee that rings forever
                    // must not hold the request (and shutdown) open.
                    entry.provisional = true;
                    let limit = local.invite_timeout.unwrap_or(TIMER_C);
                    let cancel_now = entry.cancel_on_provisional;
                    self.timers.schedule(TimerKey::ProxyC(id), now + limit);
                    if cancel_now {
                        self.cancel_branch(id, now);
                    }
                }
            }
            Owner::Branch(ctx) => {
                let ctx = *ctx;
                self.branch_response(ctx, id, status, response, now);
                // After a final only a 3xx-6xx INVITE still needs its request (for ACKs);
                // the machine lingers for up to 32 s, so free what it no longer needs.
                if status >= 200
                    && let Some(entry) = self.clients.get_mut(&id)
                {
                    entry.bytes = Bytes::new();
                    if status < 300 || entry.machine.kind() == Kind::NonInvite {
                        entry.request = None;
                    }
                }
            }
        }
    }

    pub(super) fn on_response(&mut self, msg: Message, _source: Source, now: Instant) {
        let Some(status) = msg.status() else {
            return;
        };
        let key = {
            let Some(via) = msg.top_via() else {
                return;
            };
            let Some(branch) = via.branch() else {
                return;
            };
            let is_cancel = msg.cseq().is_some_and(|(_, m)| m == Method::Cancel);
            let key: ClientKey = (branch.into(), is_cancel);
            if !self.client_index.contains_key(&key) {
                // No transaction (§16.7 step 1): forwarded as a stateless proxy would (2xx
                // retransmissions after our INVITE client ended, answers to a CANCEL we
                // forwarded statelessly, late finals), if the top Via is ours at all.
                if !self.us.is_us(via.host, via.port) {
                    tracing::debug!(status, "response matching no transaction dropped");
                    return;
                }
                None
            } else {
                Some(key)
            }
        };
        let Some(key) = key else {
            let mut msg = msg;
            msg.remove_first_value("Via");
            if msg.top_via().is_some() {
                self.forward_response_statelessly(msg);
            }
            return;
        };
        let Some(id) = self.client_index.get(&key).copied() else {
            return;
        };
        if let Some(entry) = self.clients.get_mut(&id)
            && let Err(e) = entry.machine.on_response(status, now)
        {
            tracing::debug!(status, error = %e, "response not accepted by transaction");
            return;
        }
        self.drive_client(id, Some(msg), now);
    }
}
