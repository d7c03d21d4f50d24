//! Response contexts (§16.7): branches of one proxied request, the reply and failure hooks
//! in order per context, best-response selection, and resends.

use super::*;

/// Branches a failure hook may add to one request (guards against resend loops).
pub(super) const MAX_RESENDS: u32 = 8;

/// Timer C: how long an INVITE branch may stay in "Proceeding" (RFC 3261: > 3 minutes).
pub(super) const TIMER_C: Duration = Duration::from_secs(181);

/// The response context of one proxied request (RFC 3261 §16.7).
pub(super) struct Context {
    pub(super) server: ServerId,
    pub(super) hook: HookContext,
    /// The request after routing preprocessing and hooks, before per-branch edits.
    pub(super) request: Message,
    pub(super) loop_hash: u64,
    pub(super) is_invite: bool,
    /// Client transactions without a final response yet.
    pub(super) branches: Vec<ClientId>,
    /// Branches dispatched (including ones waiting for DNS) without a final response.
    pub(super) outstanding: usize,
    pub(super) best: Option<(Message, Option<Message>)>,
    pub(super) final_sent: bool,
    pub(super) cancelled: bool,
    pub(super) resends: u32,
    /// A reply or failure hook of this context is with the filters; replies arriving
    /// meanwhile wait in `queued_replies`, so the filters see them in order.
    pub(super) hook_busy: bool,
    pub(super) queued_replies: VecDeque<QueuedReply>,
    /// A 2xx was relayed: for an initial INVITE, its dialog exists.
    pub(super) established: bool,
}

/// A reply from downstream waiting for its turn at the reply hook.
pub(super) struct QueuedReply {
    pub(super) client: ClientId,
    pub(super) status: u16,
    pub(super) response: Message,
    /// The request as sent on the branch, for a final response (failure hook, ACK).
    pub(super) request: Option<Message>,
}

pub(super) struct ParkedReply {
    pub(super) ctx: ContextId,
    pub(super) client: ClientId,
    pub(super) status: u16,
    pub(super) request: Option<Message>,
}

/// §16.7 step 6 ranking of final responses: lower is better.
pub(super) fn rank(status: u16) -> u8 {
    match status {
        600..=699 => 0,
        200..=299 => 1,
        300..=399 => 2,
        401 | 407 => 3,
        400..=499 => 4,
        503 => 6,
        _ => 5,
    }
}

impl Core {
    /// §16.10: CANCEL every pending branch (those without a provisional response yet are
    /// cancelled as soon as one arrives, §9.1).
    pub(super) fn cancel_context(&mut self, ctx_id: ContextId, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&ctx_id) else {
            return;
        };
        ctx.cancelled = true;
        let branches = ctx.branches.clone();
        for id in branches {
            self.cancel_branch(id, now);
        }
    }

    /// Sends one branch of a proxied request: Record-Route (fresh requests), our Via, and a
    /// client transaction.
    pub(super) fn send_branch(
        &mut self,
        ctx_id: ContextId,
        mut request: Message,
        fresh: bool,
        kind: TransportKind,
        addr: SocketAddr,
        now: Instant,
    ) {
        let Some(ctx) = self.contexts.get(&ctx_id) else {
            return;
        };
        if ctx.cancelled {
            self.branch_failed(ctx_id, None, 487, now);
            return;
        }
        let inbound = self.servers.get(&ctx.server).map(|s| s.source.listener);
        let Some(listener) = pick_listener(&self.listeners, kind, inbound, &addr) else {
            tracing::debug!(%kind, "no listener to forward over");
            self.branch_failed(ctx_id, None, 503, now);
            return;
        };
        if fresh && let Some(params) = &ctx.hook.record_route_params {
            // Double Record-Route when the request changes sockets, so each side of the
            // dialog reaches us on the socket it knows (the outbound one ends up on top).
            if let Some(inbound) = inbound
                && inbound != listener
                && let Some(l) = self.listeners.get(inbound)
            {
                request.prepend_header_fmt("Record-Route", record_route_value(l, params));
            }
            if let Some(l) = self.listeners.get(listener) {
                request.prepend_header_fmt("Record-Route", record_route_value(l, params));
            }
        }
        let hash = ctx.loop_hash;
        let is_invite = ctx.is_invite;
        let branch = self.new_branch(hash);
        let Some(l) = self.listeners.get(listener) else {
            return;
        };
        request.prepend_header_fmt("Via", via_value(l, &branch));
        let dest = Destination {
            kind,
            listener,
            remote: addr,
            conn: None,
        };
        ProxyStats::bump(&self.stats.forwarded);
        let kind_of_request = if is_invite {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        let id = self.start_client(
            (branch.into(), false),
            kind_of_request,
            request,
            dest,
            Owner::Branch(ctx_id),
            now,
        );
        if let Some(ctx) = self.contexts.get_mut(&ctx_id) {
            ctx.branches.push(id);
        }
    }

    /// A branch ended without a response from downstream: a local final (408, 503, 487)
    /// built from the original request takes its place.
    pub(super) fn branch_failed(
        &mut self,
        ctx_id: ContextId,
        client: Option<ClientId>,
        status: u16,
        now: Instant,
    ) {
        let Some(server) = self.contexts.get(&ctx_id).map(|c| c.server) else {
            return;
        };
        let tag = self.new_tag();
        let response = self
            .servers
            .get(&server)
            .and_then(|s| s.request.as_ref())
            .map(|r| r.response(status, reason_for(status), Some(&tag)));
        let request = client
            .and_then(|id| self.clients.get(&id))
            .and_then(|c| c.request.clone());
        self.branch_final(ctx_id, client, status, response, request, now);
    }

    /// A response from downstream on a branch (§16.7).
    pub(super) fn branch_response(
        &mut self,
        ctx_id: ContextId,
        client_id: ClientId,
        status: u16,
        mut response: Message,
        now: Instant,
    ) {
        // Step 3: remove our Via; a response with no Via left was for us and goes no further.
        response.remove_first_value("Via");
        if response.top_via().is_none() {
            tracing::debug!("response with only our Via dropped");
            return;
        }
        if status < 200 {
            let cancel_now = match self.clients.get_mut(&client_id) {
                Some(entry) => {
                    entry.provisional = true;
                    if entry.machine.kind() == Kind::Invite {
                        self.timers
                            .schedule(TimerKey::ProxyC(client_id), now + TIMER_C);
                    }
                    entry.cancel_on_provisional
                }
                None => false,
            };
            if cancel_now {
                self.cancel_branch(client_id, now);
            }
        }
        if !self.contexts.contains_key(&ctx_id) {
            // The context finished: late 2xx are still relayed (RFC 6026).
            if (200..300).contains(&status) {
                self.forward_response_statelessly(response);
            }
            return;
        }
        // Step 5: 100 Trying is hop-by-hop.
        if status == 100 {
            return;
        }
        let mut request = None;
        if status >= 200 {
            self.timers.cancel(&TimerKey::ProxyC(client_id));
            if let Some(entry) = self.clients.get_mut(&client_id) {
                if entry.finished && status >= 300 {
                    return;
                }
                entry.finished = true;
                request = entry.request.clone();
            }
        }
        let reply = QueuedReply {
            client: client_id,
            status,
            response,
            request,
        };
        match self.contexts.get_mut(&ctx_id) {
            Some(ctx) if ctx.hook_busy => ctx.queued_replies.push_back(reply),
            Some(_) => self.submit_reply(ctx_id, reply, now),
            None => {}
        }
    }

    /// Hands a reply to the reply hook; its context's hook lane is free.
    pub(super) fn submit_reply(&mut self, ctx_id: ContextId, reply: QueuedReply, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&ctx_id) else {
            return;
        };
        let parked = ParkedReply {
            ctx: ctx_id,
            client: reply.client,
            status: reply.status,
            request: reply.request,
        };
        if !self.hooks.applies(ctx.hook.transport, ctx.hook.local) {
            // No filter on this socket: relayed as is, without a copy of the context.
            self.reply_relayed(parked, Some(reply.response), now);
            return;
        }
        ctx.hook_busy = true;
        let call = HookCall::Reply {
            ctx: ctx.hook.clone(),
            msg: reply.response,
        };
        self.submit_hook(call, Parked::Reply(parked), now);
    }

    /// The filters decided on a reply: relay a provisional, or rank a final.
    pub(super) fn reply_decided(&mut self, reply: ParkedReply, result: HookResult, now: Instant) {
        let ctx_id = reply.ctx;
        let Some(ctx) = self.contexts.get_mut(&ctx_id) else {
            return;
        };
        ctx.hook_busy = false;
        let response = match result {
            HookResult {
                call: HookCall::Reply { ctx: hook, msg },
                decision,
            } => {
                ctx.hook = hook;
                (decision != Decision::Drop).then_some(msg)
            }
            HookResult { .. } => {
                tracing::warn!("filters answered a reply call with another kind; dropped");
                None
            }
        };
        self.reply_relayed(reply, response, now);
    }

    /// A reply past the filters (`None`: dropped): a provisional is relayed, a final ranked.
    fn reply_relayed(&mut self, reply: ParkedReply, response: Option<Message>, now: Instant) {
        let ctx_id = reply.ctx;
        let Some(ctx) = self.contexts.get_mut(&ctx_id) else {
            return;
        };
        let server = ctx.server;
        if reply.status < 200 {
            if let Some(response) = response
                && !ctx.final_sent
            {
                self.respond(server, response, now);
            }
        } else {
            let (client, status) = (Some(reply.client), reply.status);
            self.branch_final(ctx_id, client, status, response, reply.request, now);
        }
        self.next_in_lane(ctx_id, now);
    }

    /// Once a context's hook lane is free: the next queued reply goes to the filters, or, with
    /// none left, the context finishes if it can.
    pub(super) fn next_in_lane(&mut self, ctx_id: ContextId, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&ctx_id) else {
            return;
        };
        if ctx.hook_busy {
            return;
        }
        match ctx.queued_replies.pop_front() {
            Some(reply) => self.submit_reply(ctx_id, reply, now),
            None => self.maybe_finish(ctx_id, now),
        }
    }

    /// A branch's final response (or its local stand-in); `response` is ready to go upstream
    /// (our Via removed), `None` when a filter dropped it.
    pub(super) fn branch_final(
        &mut self,
        ctx_id: ContextId,
        client_id: Option<ClientId>,
        status: u16,
        response: Option<Message>,
        request: Option<Message>,
        now: Instant,
    ) {
        let Some(ctx) = self.contexts.get_mut(&ctx_id) else {
            return;
        };
        let first_final = match client_id {
            Some(id) => {
                let pending = ctx.branches.contains(&id);
                ctx.branches.retain(|b| *b != id);
                pending
            }
            None => true,
        };
        if first_final {
            ctx.outstanding = ctx.outstanding.saturating_sub(1);
        }
        if (200..300).contains(&status) {
            // Step 9/10: relay every 2xx at once; cancel the other branches of an INVITE.
            ctx.final_sent = true;
            ctx.established = true;
            let server = ctx.server;
            let others = if ctx.is_invite {
                ctx.branches.clone()
            } else {
                Vec::new()
            };
            if let Some(response) = response {
                self.respond(server, response, now);
            }
            for id in others {
                self.cancel_branch(id, now);
            }
            self.maybe_close_context(ctx_id);
            return;
        }
        if let Some(response) = response
            && !ctx.final_sent
        {
            let better = ctx
                .best
                .as_ref()
                .and_then(|(best, _)| best.status())
                .is_none_or(|best| rank(status) < rank(best));
            if better {
                ctx.best = Some((response, request));
            }
        }
        if status >= 600 && ctx.is_invite {
            let others = ctx.branches.clone();
            for id in others {
                self.cancel_branch(id, now);
            }
        }
        self.maybe_finish(ctx_id, now);
    }

    /// When no branch is outstanding and no hook of the context is with the filters: run the
    /// failure hook on the best response (it may resend), else relay it.
    pub(super) fn maybe_finish(&mut self, ctx_id: ContextId, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&ctx_id) else {
            return;
        };
        if ctx.hook_busy {
            return;
        }
        if ctx.outstanding > 0 || ctx.final_sent {
            self.maybe_close_context(ctx_id);
            return;
        }
        let server = ctx.server;
        let (best, request) = match ctx.best.take() {
            Some(best) => best,
            None => {
                // Every final was dropped by filters: answer 500 ourselves.
                ctx.final_sent = true;
                self.respond_local(server, 500, now);
                self.maybe_close_context(ctx_id);
                return;
            }
        };
        let status = best.status().unwrap_or(500);
        if status >= 300 && !ctx.cancelled && ctx.resends < MAX_RESENDS {
            ctx.hook_busy = true;
            let call = HookCall::Failure {
                ctx: ctx.hook.clone(),
                request: request.unwrap_or_else(|| ctx.request.clone()),
                reply: Box::new(best),
            };
            self.submit_hook(call, Parked::Failure(ctx_id), now);
            return;
        }
        ctx.final_sent = true;
        self.respond(server, best, now);
        self.maybe_close_context(ctx_id);
    }

    /// The failure hook decided: send the request again on a new branch, or relay the best
    /// final response.
    pub(super) fn failure_decided(&mut self, ctx_id: ContextId, result: HookResult, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&ctx_id) else {
            return;
        };
        ctx.hook_busy = false;
        let server = ctx.server;
        let HookResult {
            call:
                HookCall::Failure {
                    ctx: hook,
                    mut request,
                    reply,
                },
            decision,
        } = result
        else {
            tracing::warn!("filters answered a failure call with another kind; answering 500");
            ctx.final_sent = true;
            self.respond_local(server, 500, now);
            self.next_in_lane(ctx_id, now);
            return;
        };
        ctx.hook = hook;
        // A CANCEL that came while the filters decided ends the request with this reply.
        if let Decision::Resend { next_hop } = decision
            && !ctx.cancelled
        {
            // The request as sent carries our Via; the new branch gets a fresh one.
            request.remove_first_value("Via");
            let hop = match next_hop {
                Some(hop) => Some(hop),
                None => ctx
                    .hook
                    .next_hop
                    .clone()
                    .or_else(|| self.router.next_hop(&request, &self.us).ok()),
            };
            if let Some(hop) = hop {
                ctx.resends += 1;
                ctx.outstanding += 1;
                self.dispatch(
                    &hop,
                    Job::Branch {
                        ctx: ctx_id,
                        request,
                        fresh: false,
                    },
                    now,
                );
                self.next_in_lane(ctx_id, now);
                return;
            }
        }
        ctx.final_sent = true;
        self.respond(server, *reply, now);
        self.next_in_lane(ctx_id, now);
    }

    pub(super) fn maybe_close_context(&mut self, ctx_id: ContextId) {
        let done = self.contexts.get(&ctx_id).is_some_and(|c| {
            c.final_sent && c.outstanding == 0 && !c.hook_busy && c.queued_replies.is_empty()
        });
        if done && let Some(ctx) = self.contexts.remove(&ctx_id) {
            if let Some(server) = self.servers.get_mut(&ctx.server) {
                server.context = None;
            }
            // A BYE's final ends its dialog whatever the status (RFC 3261 §15.1.2: a 481 or
            // 408 ends it too); an initial INVITE without a 2xx never made one.
            let dialog_over = ctx.request.method() == Some(&Method::Bye)
                || (ctx.is_invite && !ctx.established && ctx.request.to_tag().is_none());
            self.hooks.transaction_ended(&ctx.hook, dialog_over);
        }
    }
}
