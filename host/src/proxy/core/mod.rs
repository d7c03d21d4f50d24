//! The proxy core: the tables of server and client transactions and response contexts, one
//! timer queue, and the events that drive them. A message handed to the filters parks its
//! transaction until the decision comes back as an event. Rooms: `server` (received requests),
//! `client` (sent requests), `context` (§16.7 response contexts), `stateless` (§16.11), and
//! `driver` (the task that owns the sockets).

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use siphost_sip::{Message, Method, Via, reply_to_malformed};
use siphost_transaction::{
    ClientAction, ClientTransaction, ConfigError as TimerConfigError, Kind, ServerAction,
    ServerTransaction, TimerConfig, TimerQueue,
};
use tokio::sync::mpsc;

use super::handle::{
    Answered, Command, CommandReceiver, Origination, ProxyStats, ReplySink, SendError,
};
#[cfg(test)]
use super::hooks::OVERLOAD_RETRY_AFTER;
use super::hooks::{Decision, FilterHooks, HookCall, HookContext, HookDone, HookResult, Submitted};
use super::routing::{
    Identities, MAGIC_COOKIE, Router, is_loop, loop_hash, make_branch, preprocess_route, push_hex,
    record_route_value, stateless_branch, via_transport, via_value, wants_record_route,
};
use crate::access::table::CredentialTables;
use crate::config::Config;
use crate::transport::{
    Bound, ConnId, Datagram, Listener, NextHop, ReadTurn, ResolveError, Resolver, SendFailure,
    Source, Transport, TransportEvent, TransportKind, UdpReceiver, pick_listener,
};

mod access;
mod client;
mod context;
mod driver;
mod server;
mod shard;
mod stateless;

use client::*;
use context::*;
pub use driver::{Proxy, ProxyError};
use server::*;
pub use shard::MAX_SHARDS;
use shard::ShardMap;
use stateless::*;

#[cfg(test)]
mod tests;

/// Ids of the core's tables. One counter hands them all out; the types keep a server id from
/// being looked up among clients.
macro_rules! table_id {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        struct $name(u64);
    )*};
}

table_id! {
    /// A server transaction.
    ServerId;
    /// A client transaction.
    ClientId;
    /// A response context (RFC 3261 §16).
    ContextId;
    /// A job waiting for its next hop's address.
    JobId;
    /// A call parked with the filters.
    ParkId;
}

/// Timer queue keys: which machine a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TimerKey {
    Server(ServerId),
    Client(ClientId),
    /// RFC 3261 §16.8 Timer C of an INVITE branch that got a provisional response; for a
    /// local request also its own time limits (fr_timeout, fr_inv_timeout).
    ProxyC(ClientId),
}

/// A transaction waiting for its filters' decision, and what resumes it.
enum Parked {
    /// A new request with a server transaction and a context id reserved for it.
    Request(ParkedRequest),
    /// A request forwarded without a transaction (§16.11).
    Stateless(ParkedStateless),
    /// A reply on a branch of a response context.
    Reply(ParkedReply),
    /// The best final of a context is a failure (failure_route).
    Failure(ContextId),
}

/// Work waiting for a next hop's address.
enum Job {
    Branch {
        ctx: ContextId,
        request: Message,
        fresh: bool,
    },
    /// A request forwarded without a transaction (§16.11), under our Via with `branch`.
    Stateless {
        request: Message,
        branch: String,
        inbound: usize,
    },
    Local {
        request: Message,
        how: Origination,
        reply: ReplySink,
    },
}

enum Internal {
    Resolved {
        token: JobId,
        hop: NextHop,
        result: Result<SocketAddr, ResolveError>,
    },
    /// The filters decided on a parked call (boxed: two messages would make every event
    /// of the core's loop as large).
    Decided {
        token: ParkId,
        result: Box<HookResult>,
    },
}

/// What the core asks its driver to do.
#[derive(Debug)]
enum Output {
    /// Send a datagram from a UDP listener.
    Datagram {
        listener: usize,
        remote: SocketAddr,
        data: Bytes,
    },
    /// Open TCP connection `conn` (its id chosen by the core) to `remote`.
    Connect {
        conn: ConnId,
        remote: SocketAddr,
        listener: usize,
    },
    /// Queue bytes on a TCP connection.
    Stream { conn: ConnId, data: Bytes },
    /// Look up a next hop's host name; the answer comes back as [`Internal::Resolved`].
    Resolve { job: JobId, hop: NextHop },
}

/// The TCP connections the core knows, by id and by peer, so requests and responses reuse
/// them (RFC 3261 §18). Ids come from the transport's counter, shared with accepted ones.
struct ConnTable {
    remotes: FxHashMap<ConnId, SocketAddr>,
    by_remote: HashMap<SocketAddr, ConnId>,
    ids: Arc<AtomicU64>,
}

impl ConnTable {
    fn new(ids: Arc<AtomicU64>) -> ConnTable {
        ConnTable {
            remotes: FxHashMap::default(),
            by_remote: HashMap::new(),
            ids,
        }
    }

    /// Applies a connection event; false for a `Closed` of a connection no longer known.
    fn on_event(&mut self, event: &TransportEvent) -> bool {
        match event {
            TransportEvent::Opened { conn, remote, .. } => {
                self.remotes.insert(*conn, *remote);
                self.by_remote.insert(*remote, *conn);
                true
            }
            TransportEvent::Closed { conn, remote, .. } => {
                let known = self.remotes.remove(conn).is_some();
                if self.by_remote.get(remote) == Some(conn) {
                    self.by_remote.remove(remote);
                }
                known
            }
            TransportEvent::Message { .. } => true,
        }
    }
}

/// Each tenant's access control by listener index, one for all shards: nonces, replay
/// tables and rate buckets are the tenant's, whichever shard a request lands on.
type SharedAccess = FxHashMap<usize, Arc<std::sync::Mutex<crate::access::AccessControl>>>;

/// What every shard of one proxy shares.
#[derive(Clone)]
struct CoreShared {
    hooks: Arc<dyn FilterHooks>,
    stats: Arc<ProxyStats>,
    /// The transport's counter of TCP connection ids.
    conn_ids: Arc<AtomicU64>,
    access: SharedAccess,
}

/// The grid that deadlines ending a wait are served on (see `Core::set_machine_timer`).
const WAIT_STEP: Duration = Duration::from_millis(250);

struct Core {
    listeners: Vec<Listener>,
    /// Access control of the tenants that have `[tenant.access]`, by listener index.
    access: SharedAccess,
    conns: ConnTable,
    /// What the driver is to carry out, in order.
    outputs: VecDeque<Output>,
    hooks: Arc<dyn FilterHooks>,
    stats: Arc<ProxyStats>,
    us: Identities,
    router: Router,
    record_route: bool,
    max_forwards: u32,
    timer_config: TimerConfig,
    timers: TimerQueue<TimerKey, rustc_hash::FxBuildHasher>,
    /// Reused by `on_timers` for the keys that expired.
    expired: Vec<TimerKey>,
    /// Where the grid of [`WAIT_STEP`] starts: the first waiting deadline set.
    wait_origin: Option<Instant>,
    // Boxed: a map's growth moves its entries, and these are hundreds of bytes each (a
    // message or three). Unboxed, growing to 64k transactions copied tens of MB at once
    // into fresh pages, stalling the proxy thread for milliseconds.
    servers: FxHashMap<ServerId, Box<ServerEntry>>,
    /// Keyed with a random seed, not Fx: its keys (branch, sent-by) are chosen by peers.
    /// foldhash rather than SipHash: a third of the cost on these 30–60 byte keys.
    server_index: HashMap<ServerKey, ServerId, foldhash::fast::RandomState>,
    clients: FxHashMap<ClientId, Box<ClientEntry>>,
    client_index: FxHashMap<ClientKey, ClientId>,
    contexts: FxHashMap<ContextId, Box<Context>>,
    pending_jobs: FxHashMap<JobId, Job>,
    parked: FxHashMap<ParkId, Parked>,
    resolver: Resolver,
    internal: mpsc::UnboundedSender<Internal>,
    instance: u32,
    next_id: u64,
    draining: Option<Instant>,
}

fn reason_for(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        408 => "Request Timeout",
        420 => "Bad Extension",
        481 => "Call/Transaction Does Not Exist",
        482 => "Loop Detected",
        483 => "Too Many Hops",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn kind_of(method: &Method) -> Kind {
    if *method == Method::Invite {
        Kind::Invite
    } else {
        Kind::NonInvite
    }
}

impl Core {
    /// A core over `listeners` (bound by the driver), writing `instance` into its branches
    /// and tags; filter decisions come back through `internal`.
    fn new(
        config: &Config,
        listeners: Vec<Listener>,
        shared: &CoreShared,
        internal: mpsc::UnboundedSender<Internal>,
        instance: u32,
    ) -> Result<Core, ProxyError> {
        let t = &config.transaction;
        let timer_config = TimerConfig::new(
            Duration::from_millis(t.t1_ms),
            Duration::from_millis(t.t2_ms),
            Duration::from_millis(t.t4_ms),
        )?;
        Ok(Core {
            access: shared.access.clone(),
            us: Identities::new(&listeners),
            listeners,
            conns: ConnTable::new(shared.conn_ids.clone()),
            outputs: VecDeque::new(),
            hooks: shared.hooks.clone(),
            stats: shared.stats.clone(),
            router: Router::new(&config.proxy),
            record_route: config.proxy.record_route,
            max_forwards: config.proxy.max_forwards,
            timer_config,
            timers: TimerQueue::default(),
            expired: Vec::new(),
            wait_origin: None,
            servers: FxHashMap::default(),
            server_index: HashMap::default(),
            clients: FxHashMap::default(),
            client_index: FxHashMap::default(),
            contexts: FxHashMap::default(),
            pending_jobs: FxHashMap::default(),
            parked: FxHashMap::default(),
            resolver: Resolver::default(),
            internal,
            instance,
            next_id: 1,
            draining: None,
        })
    }

    /// Sets a machine's deadline. One that only ends a wait (Timers D, I, J, K, L, M) is moved
    /// up to the next step of a grid: served late, the transaction just absorbs
    /// retransmissions a little longer, and the shard wakes once a step for a whole batch of
    /// ended transactions instead of every few milliseconds after the calls stop.
    fn set_machine_timer(&mut self, key: TimerKey, at: Option<Instant>, only_waiting: bool) {
        let at = match at {
            Some(at) if only_waiting => Some(self.on_wait_grid(at)),
            other => other,
        };
        self.timers.set(key, at);
    }

    fn on_wait_grid(&mut self, at: Instant) -> Instant {
        let origin = *self.wait_origin.get_or_insert(at);
        let step = WAIT_STEP.as_nanos();
        let since = at.saturating_duration_since(origin).as_nanos();
        let rounded = since.div_ceil(step).saturating_mul(step);
        u64::try_from(rounded)
            .ok()
            .and_then(|nanos| origin.checked_add(Duration::from_nanos(nanos)))
            .unwrap_or(at)
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn new_branch(&mut self, hash: u64) -> String {
        let counter = self.next_id();
        make_branch(hash, self.instance, counter)
    }

    /// The listener of `kind` bound to `local` (or to the wildcard address on its port).
    fn listener_on(&self, (kind, local): (TransportKind, SocketAddr)) -> Option<usize> {
        let exact = self
            .listeners
            .iter()
            .position(|l| l.kind == kind && l.local == local);
        exact.or_else(|| {
            self.listeners.iter().position(|l| {
                l.kind == kind
                    && l.local.ip().is_unspecified()
                    && l.local.port() == local.port()
                    && l.local.is_ipv4() == local.is_ipv4()
            })
        })
    }

    /// The key of a response context's transaction variables: the instance, then the
    /// context's id.
    fn transaction_key(&self, ctx: ContextId) -> String {
        let mut key = String::with_capacity(26);
        push_hex(&mut key, u64::from(self.instance), 8);
        key.push('-');
        push_hex(&mut key, ctx.0, 0);
        key
    }

    fn new_tag(&mut self) -> String {
        let counter = self.next_id();
        let mut tag = String::with_capacity(24);
        push_hex(&mut tag, u64::from(self.instance), 8);
        push_hex(&mut tag, counter, 0);
        tag
    }

    fn drained(&self) -> bool {
        self.contexts.is_empty()
            && self.pending_jobs.is_empty()
            && self.parked.is_empty()
            && !self
                .clients
                .values()
                .any(|c| matches!(&c.owner, Owner::Local(local) if local.reply.is_some()))
    }

    fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::SendRequest {
                request,
                how,
                reply,
            } => self.local_request(*request, how, reply, now),
            Command::Shutdown { grace } => {
                tracing::info!(
                    in_flight = self.contexts.len(),
                    "shutting down: no new transactions"
                );
                self.draining = Some(now + grace);
            }
        }
    }

    fn on_internal(&mut self, internal: Internal, now: Instant) {
        match internal {
            Internal::Resolved { token, hop, result } => {
                let Some(job) = self.pending_jobs.remove(&token) else {
                    return;
                };
                match result {
                    Ok(addr) => {
                        self.resolver.remember(&hop, addr, now);
                        self.send_job(job, hop.kind, addr, now);
                    }
                    Err(why) => {
                        tracing::debug!(%why, "next hop not resolved");
                        self.job_failed(job, 503, SendError::Unresolved(Arc::new(why)), now);
                    }
                }
            }
            Internal::Decided { token, result } => {
                if let Some(parked) = self.parked.remove(&token) {
                    self.resume(parked, *result, now);
                }
            }
        }
    }

    /// Hands a call to the filters. Without a filter for it the transaction goes on at once;
    /// otherwise it stays parked until the decision arrives as [`Internal::Decided`].
    fn submit_hook(&mut self, call: HookCall, parked: Parked, now: Instant) {
        if let HookCall::Request { msg, .. } = &call
            && msg.method() == Some(&Method::Invite)
            && msg.to_tag().is_none()
        {
            ProxyStats::bump(&self.stats.calls);
        }
        let ctx = call.ctx();
        if !self.hooks.applies(ctx.transport, ctx.local) {
            // No filter on this socket: no callback, no channel clone, no park id.
            let decision = Decision::Continue;
            self.resume(parked, HookResult { call, decision }, now);
            return;
        }
        let token = ParkId(self.next_id());
        let events = self.internal.clone();
        let done: HookDone = Box::new(move |result| {
            // The receiver is gone only once the core stopped, and its transactions with it.
            let result = Box::new(result);
            let _ = events.send(Internal::Decided { token, result });
        });
        match self.hooks.submit(call, done) {
            Submitted::Queued => {
                self.parked.insert(token, parked);
            }
            Submitted::Decided(result) => self.resume(parked, result, now),
            Submitted::NoFilter(call) => {
                let decision = Decision::Continue;
                self.resume(parked, HookResult { call, decision }, now);
            }
            Submitted::Overloaded(call) => {
                if matches!(call, HookCall::Request { .. }) {
                    ProxyStats::bump(&self.stats.overloaded);
                }
                let decision = call.overloaded();
                self.resume(parked, HookResult { call, decision }, now);
            }
        }
    }

    fn resume(&mut self, parked: Parked, result: HookResult, now: Instant) {
        match parked {
            Parked::Request(parked) => self.request_decided(parked, result, now),
            Parked::Stateless(parked) => self.stateless_decided(parked, result, now),
            Parked::Reply(parked) => self.reply_decided(parked, result, now),
            Parked::Failure(ctx) => self.failure_decided(ctx, result, now),
        }
    }

    fn on_transport_event(&mut self, event: TransportEvent, now: Instant) {
        let known = self.conns.on_event(&event);
        match event {
            TransportEvent::Message { data, source } => self.on_message(data, source, now),
            TransportEvent::Opened { .. } => {}
            TransportEvent::Closed { conn, failed, .. } => {
                if !failed || !known {
                    return;
                }
                let affected: Vec<ClientId> = self
                    .clients
                    .iter()
                    .filter(|(_, c)| c.dest.conn == Some(conn) && !c.machine.is_terminated())
                    .map(|(id, _)| *id)
                    .collect();
                for id in affected {
                    if let Some(entry) = self.clients.get_mut(&id) {
                        let _ = entry.machine.on_transport_error(now);
                    }
                    self.drive_client(id, None, now);
                }
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        let mut expired = std::mem::take(&mut self.expired);
        expired.extend(self.timers.pop_expired(now));
        for key in expired.drain(..) {
            match key {
                TimerKey::Server(id) => {
                    if let Some(entry) = self.servers.get_mut(&id) {
                        entry.machine.handle_timeout(now);
                        self.drive_server(id);
                    }
                }
                TimerKey::Client(id) => {
                    if let Some(entry) = self.clients.get_mut(&id) {
                        entry.machine.handle_timeout(now);
                        self.drive_client(id, None, now);
                    }
                }
                TimerKey::ProxyC(id) => {
                    if self.clients.get(&id).is_some_and(|c| c.finished) {
                        // The CANCELled INVITE's linger (below) is over.
                        self.remove_client(id);
                        continue;
                    }
                    // §16.8: CANCEL the branch and answer upstream as if it timed out. The
                    // machine has no timer left in "Proceeding": after a CANCEL it lingers
                    // 64*T1 to ACK the 487, otherwise it goes now.
                    self.cancel_branch(id, now);
                    self.client_failed(id, 408, now);
                    let cancelled = self
                        .clients
                        .get(&id)
                        .is_some_and(|c| c.provisional && c.machine.kind() == Kind::Invite);
                    if cancelled {
                        let linger = now + self.timer_config.sixty_four_t1();
                        self.timers.schedule(TimerKey::ProxyC(id), linger);
                    } else {
                        self.remove_client(id);
                    }
                }
            }
        }
        // The room is kept for the next round: timers expire after most events.
        self.expired = expired;
    }

    /// Entry point for every received message.
    fn on_message(&mut self, data: Bytes, source: Source, now: Instant) {
        let msg = match Message::parse(data.clone()) {
            Ok(msg) => msg,
            Err(e) => {
                ProxyStats::bump(&self.stats.malformed);
                tracing::debug!(remote = %source.remote, error = %e, "malformed message");
                if let Some(reply) = reply_to_malformed(&data, &e) {
                    self.send_to_source(source, source.remote, reply);
                }
                return;
            }
        };
        if msg.is_request() {
            ProxyStats::bump(&self.stats.requests);
            self.on_request(msg, source, now);
        } else {
            ProxyStats::bump(&self.stats.responses);
            self.on_response(msg, source, now);
        }
    }

    /// Sends bytes over UDP, or over TCP on `conn` when it is still open, else on an open
    /// connection to `remote`, else on a new one. Returns the TCP connection used.
    fn transmit(
        &mut self,
        kind: TransportKind,
        listener: usize,
        remote: SocketAddr,
        conn: Option<ConnId>,
        data: Bytes,
    ) -> Option<ConnId> {
        match kind {
            TransportKind::Udp => {
                let datagram = Output::Datagram {
                    listener,
                    remote,
                    data,
                };
                self.outputs.push_back(datagram);
                None
            }
            TransportKind::Tcp => {
                let known = conn
                    .filter(|id| self.conns.remotes.contains_key(id))
                    .or_else(|| self.conns.by_remote.get(&remote).copied());
                let conn = known.unwrap_or_else(|| {
                    let conn = self.conns.ids.fetch_add(1, Ordering::Relaxed);
                    self.conns.remotes.insert(conn, remote);
                    self.conns.by_remote.insert(remote, conn);
                    let connect = Output::Connect {
                        conn,
                        remote,
                        listener,
                    };
                    self.outputs.push_back(connect);
                    conn
                });
                self.outputs.push_back(Output::Stream { conn, data });
                Some(conn)
            }
        }
    }

    /// Sends bytes back the way a message came: its connection if open, else the address.
    fn send_to_source(&mut self, source: Source, remote: SocketAddr, data: Bytes) {
        self.transmit(source.kind, source.listener, remote, source.conn, data);
    }

    /// §16.4 route preprocessing of a request about to pass the filters, and the hook context
    /// for it: the next hop the static routing would choose goes in as `next_hop`, so a change
    /// by a filter can be told apart from the proxy's own choice.
    fn routed_hook_context(
        &self,
        request: &mut Message,
        source: &Source,
        transaction_key: String,
        record_route_params: Option<String>,
    ) -> HookContext {
        let own_route = preprocess_route(request, &self.us);
        let local = self
            .listeners
            .get(source.listener)
            .map_or(source.remote, |l| l.local);
        HookContext {
            transport: source.kind.as_str(),
            source: source.remote,
            local,
            next_hop: self.router.next_hop(request, &self.us).ok(),
            dialog_key: request.call_id().map(str::to_owned),
            transaction_key,
            record_route_params,
            own_route,
            endpoint: None,
        }
    }

    fn local_request(
        &mut self,
        mut request: Message,
        how: Origination,
        reply: ReplySink,
        now: Instant,
    ) {
        let invalid = |why: &'static str| Err(SendError::Invalid(why));
        let check = if !request.is_request() {
            invalid("not a request")
        } else if request.method() == Some(&Method::Ack) {
            invalid("ACK has no response; send it as a new request without waiting")
        } else if request.call_id().is_none() {
            invalid("no Call-ID")
        } else if request.cseq().is_none() {
            invalid("no CSeq")
        } else if request.header("From").is_none() || request.header("To").is_none() {
            invalid("no From or To")
        } else if self.draining.is_some() {
            Err(SendError::Stopped)
        } else {
            Ok(())
        };
        if let Err(e) = check {
            reply.send(Err(e));
            return;
        }
        if request.max_forwards().is_none() {
            request.set_header("Max-Forwards", &self.max_forwards.to_string());
        }
        let next_hop = match &how.next_hop {
            Some(hop) => hop.clone(),
            None => match self.router.next_hop(&request, &self.us) {
                Ok(hop) => hop,
                Err(e) => {
                    reply.send(Err(SendError::NoRoute(e.0)));
                    return;
                }
            },
        };
        let job = Job::Local {
            request,
            how,
            reply,
        };
        self.dispatch(&next_hop, job, now);
    }

    /// Resolves the next hop (at once for IP literals and cached names, else on a task) and
    /// then sends the job.
    fn dispatch(&mut self, next_hop: &str, job: Job, now: Instant) {
        // A request that must leave from a given socket uses its transport unless the next
        // hop names one (Kamailio's send socket).
        let default = match &job {
            Job::Local { how, .. } => how.local.map_or(TransportKind::Udp, |(kind, _)| kind),
            _ => TransportKind::Udp,
        };
        let hop = match NextHop::from_uri_or(next_hop, default) {
            Ok(hop) => hop,
            Err(why) => {
                tracing::debug!(%why, "unusable next hop");
                self.job_failed(job, 502, why.into(), now);
                return;
            }
        };
        if let Some(addr) = self.resolver.cached(&hop, now) {
            self.send_job(job, hop.kind, addr, now);
            return;
        }
        let token = JobId(self.next_id());
        self.pending_jobs.insert(token, job);
        self.outputs.push_back(Output::Resolve { job: token, hop });
    }

    /// A job whose next hop gave no address: a proxied branch ends with `status`, a local
    /// request with `why`.
    fn job_failed(&mut self, job: Job, status: u16, why: SendError, now: Instant) {
        match job {
            Job::Branch { ctx, .. } => self.branch_failed(ctx, None, status, now),
            Job::Stateless { .. } => tracing::debug!(%why, "stateless request not forwarded"),
            Job::Local { reply, .. } => {
                reply.send(Err(why));
            }
        }
    }

    fn send_job(&mut self, job: Job, kind: TransportKind, addr: SocketAddr, now: Instant) {
        match job {
            Job::Branch {
                ctx,
                request,
                fresh,
            } => self.send_branch(ctx, request, fresh, kind, addr, now),
            Job::Stateless {
                mut request,
                branch,
                inbound,
            } => {
                let Some(listener) = pick_listener(&self.listeners, kind, Some(inbound), &addr)
                else {
                    tracing::debug!(%kind, "no listener for a stateless request");
                    return;
                };
                let Some(l) = self.listeners.get(listener) else {
                    return;
                };
                request.prepend_header_fmt("Via", via_value(l, &branch));
                ProxyStats::bump(&self.stats.forwarded);
                self.transmit(kind, listener, addr, None, request.to_bytes());
            }
            Job::Local {
                mut request,
                how,
                reply,
            } => {
                let listener = match how.local {
                    Some(local) => self
                        .listener_on(local)
                        .ok_or(SendError::NoSuchListener(local.0, local.1)),
                    None => pick_listener(&self.listeners, kind, None, &addr)
                        .ok_or(SendError::NoListener(kind)),
                };
                let listener = match listener {
                    Ok(index) if self.listeners[index].kind == kind => index,
                    Ok(index) => {
                        reply.send(Err(SendError::NoSuchListener(
                            kind,
                            self.listeners[index].local,
                        )));
                        return;
                    }
                    Err(why) => {
                        reply.send(Err(why));
                        return;
                    }
                };
                let has_branch = request.top_via().is_some_and(|v| v.branch().is_some());
                if !has_branch {
                    let hash = loop_hash(&request);
                    let branch = self.new_branch(hash);
                    if request.top_via().is_some() {
                        request.set_top_via_param("branch", Some(&branch));
                    } else if let Some(l) = self.listeners.get(listener) {
                        request.prepend_header_fmt("Via", via_value(l, &branch));
                    }
                }
                let Some(branch) = request
                    .top_via()
                    .and_then(|v| v.branch().map(Box::<str>::from))
                else {
                    reply.send(Err(SendError::Invalid("no Via")));
                    return;
                };
                let kind_of_request = request.method().map_or(Kind::NonInvite, kind_of);
                let dest = Destination {
                    kind,
                    listener,
                    remote: addr,
                    conn: None,
                };
                let id = self.start_client(
                    (branch, false),
                    kind_of_request,
                    request,
                    dest,
                    Owner::Local(LocalOwner {
                        reply: Some(reply),
                        invite_timeout: how.invite_timeout,
                    }),
                    now,
                );
                if let Some(limit) = how.timeout
                    && self.clients.contains_key(&id)
                {
                    self.timers.schedule(TimerKey::ProxyC(id), now + limit);
                }
            }
        }
    }
}
