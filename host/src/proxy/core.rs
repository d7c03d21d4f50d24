//! The proxy core: one task owns every server and client transaction, the response contexts
//! of RFC 3261 §16, one timer queue and the TCP table; it reads UDP sockets itself. A message
//! handed to the filters parks its transaction until the decision comes back as an event.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rustc_hash::FxHashMap;
use siphost_sip::{Message, Method, Uri, Via, reply_to_malformed};
use siphost_transaction::{
    ClientAction, ClientTransaction, ConfigError as TimerConfigError, Kind, ServerAction,
    ServerTransaction, TimerConfig, TimerQueue,
};
use tokio::sync::{mpsc, oneshot};

use super::handle::{Command, CommandReceiver, ProxyStats, SendError};
use super::hooks::{Decision, FilterHooks, HookCall, HookContext, HookDone, HookResult, Submitted};
use super::routing::{
    Identities, MAGIC_COOKIE, Router, is_loop, loop_hash, make_branch, preprocess_route,
    record_route_value, stateless_branch, via_transport, via_value, wants_record_route,
};
use crate::access::{AccessControl, Target, Verdict};
use crate::config::Config;
use crate::transport::{
    Bound, ConnId, NextHop, ResolveError, Resolver, SendFailure, Source, Transport, TransportEvent,
    TransportKind, UdpReceiver,
};

/// Branches a failure hook may add to one request (guards against resend loops).
const MAX_RESENDS: u32 = 8;

/// Retry-After (seconds) of the 503 answering a request whose tenant's filter queue is full.
const OVERLOAD_RETRY_AFTER: &str = "5";

/// Timer queue keys: which machine a deadline belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TimerKey {
    Server(u64),
    Client(u64),
    /// RFC 3261 §16.8 Timer C of an INVITE branch that got a provisional response.
    ProxyC(u64),
}

/// Timer C: how long an INVITE branch may stay in "Proceeding" (RFC 3261: > 3 minutes).
const TIMER_C: Duration = Duration::from_secs(181);

/// RFC 3261 §17.2.3 server transaction key: branch, sent-by and method (ACK → INVITE).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: Box<str>,
    sent_by: Box<str>,
    method: Box<str>,
}

impl ServerKey {
    fn new(msg: &Message, via: &Via<'_>, method: &str) -> ServerKey {
        let branch = match via.branch() {
            Some(b) if b.starts_with(MAGIC_COOKIE) => b.into(),
            // RFC 2543 peers: fall back to the dialog and sequence identifiers.
            _ => format!(
                "2543|{}|{}|{}",
                msg.call_id().unwrap_or(""),
                msg.from_tag().unwrap_or(""),
                msg.cseq().map_or(0, |(n, _)| n)
            )
            .into(),
        };
        ServerKey {
            branch,
            sent_by: format!(
                "{}:{}",
                via.host.to_ascii_lowercase(),
                via.port.unwrap_or(5060)
            )
            .into(),
            method: method.into(),
        }
    }
}

/// Client transaction key: our branch, and whether it is the CANCEL sharing an INVITE's branch.
type ClientKey = (Box<str>, bool);

/// Where a client transaction sends: transport, our socket, the peer, the TCP connection.
#[derive(Debug, Clone, Copy)]
struct Destination {
    kind: TransportKind,
    listener: usize,
    remote: SocketAddr,
    conn: Option<ConnId>,
}

struct ServerEntry {
    machine: ServerTransaction,
    key: ServerKey,
    source: Source,
    /// Where responses go when the request's connection is gone or for UDP (RFC 3581).
    reply_to: SocketAddr,
    /// The request as received; kept until a final response, to build local responses.
    request: Option<Message>,
    last_response: Option<Bytes>,
    context: Option<u64>,
    /// A CANCEL arrived while the request waited for its filters: answer 487, do not forward.
    cancelled: bool,
}

enum Owner {
    /// A branch of a proxied request.
    Branch(u64),
    /// A request from a [`super::ProxyHandle`]; the final response goes here.
    Local(Option<oneshot::Sender<Result<Message, SendError>>>),
    /// A CANCEL we generated; its response ends here.
    Cancel,
}

struct ClientEntry {
    machine: ClientTransaction,
    key: ClientKey,
    /// The request as sent (None for generated CANCELs).
    request: Option<Message>,
    bytes: Bytes,
    dest: Destination,
    owner: Owner,
    provisional: bool,
    cancel_on_provisional: bool,
    finished: bool,
}

/// The response context of one proxied request (RFC 3261 §16.7).
struct Context {
    server: u64,
    hook: HookContext,
    /// The request after routing preprocessing and hooks, before per-branch edits.
    request: Message,
    loop_hash: u64,
    is_invite: bool,
    /// Client transactions without a final response yet.
    branches: Vec<u64>,
    /// Branches dispatched (including ones waiting for DNS) without a final response.
    outstanding: usize,
    best: Option<(Message, Option<Message>)>,
    final_sent: bool,
    cancelled: bool,
    resends: u32,
    /// A reply or failure hook of this context is with the filters; replies arriving
    /// meanwhile wait in `queued_replies`, so the filters see them in order.
    hook_busy: bool,
    queued_replies: VecDeque<QueuedReply>,
}

/// A reply from downstream waiting for its turn at the reply hook.
struct QueuedReply {
    client: u64,
    status: u16,
    response: Message,
    /// The request as sent on the branch, for a final response (failure hook, ACK).
    request: Option<Message>,
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
    Failure(u64),
}

struct ParkedRequest {
    server: u64,
    ctx: u64,
    loop_hash: u64,
    is_invite: bool,
    /// The next hop static routing chose before the filters ran.
    preliminary: Option<String>,
    ruri_before: Option<String>,
}

struct ParkedReply {
    ctx: u64,
    client: u64,
    status: u16,
    request: Option<Message>,
}

struct ParkedStateless {
    source: Source,
    reply_to: SocketAddr,
    /// The request as received, to answer it locally (None for ACKs, never answered).
    original: Option<Message>,
    branch: String,
    preliminary: Option<String>,
}

/// Work waiting for a next hop's address.
enum Job {
    Branch {
        ctx: u64,
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
        reply: oneshot::Sender<Result<Message, SendError>>,
    },
}

enum Internal {
    Resolved {
        token: u64,
        hop: NextHop,
        result: Result<SocketAddr, ResolveError>,
    },
    /// The filters decided on a parked call (boxed: two messages would make every event
    /// of the core's loop as large).
    Decided { token: u64, result: Box<HookResult> },
}

enum Event {
    Datagram(Bytes, Source),
    Transport(TransportEvent),
    Command(Command),
    Internal(Internal),
    Timer,
    GraceOver,
}

/// Why a proxy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("transaction timers: {0}")]
    Timers(#[from] TimerConfigError),
    #[error("tenant {tenant:?}: {source}")]
    Access {
        tenant: String,
        source: crate::access::config::AccessConfigError,
    },
    #[error("tenant {tenant:?}: listen entry {why}")]
    TenantListen { tenant: String, why: String },
}

/// The proxy: build with [`Proxy::new`], then [`Proxy::run`] until shutdown.
pub struct Proxy {
    core: Core,
    udp: UdpReceiver,
    events: mpsc::Receiver<TransportEvent>,
    commands: mpsc::Receiver<Command>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
}

struct Core {
    transport: Transport,
    /// Access control of the tenants that have `[tenant.access]`, by listener index.
    access: FxHashMap<usize, AccessControl>,
    hooks: Arc<dyn FilterHooks>,
    stats: Arc<ProxyStats>,
    us: Identities,
    router: Router,
    record_route: bool,
    max_forwards: u32,
    timer_config: TimerConfig,
    timers: TimerQueue<TimerKey>,
    servers: FxHashMap<u64, ServerEntry>,
    /// SipHash, not Fx: its keys (branch, sent-by) are chosen by peers.
    server_index: HashMap<ServerKey, u64>,
    clients: FxHashMap<u64, ClientEntry>,
    client_index: FxHashMap<ClientKey, u64>,
    contexts: FxHashMap<u64, Context>,
    pending_jobs: FxHashMap<u64, Job>,
    parked: FxHashMap<u64, Parked>,
    resolver: Resolver,
    internal: mpsc::UnboundedSender<Internal>,
    instance: u32,
    next_id: u64,
    draining: Option<Instant>,
}

impl Proxy {
    /// A proxy over bound sockets, calling `hooks` at each routing point.
    pub fn new(
        config: &Config,
        bound: Bound,
        hooks: Arc<dyn FilterHooks>,
        commands: CommandReceiver,
    ) -> Result<Proxy, ProxyError> {
        let t = &config.transaction;
        let timer_config = TimerConfig::new(
            Duration::from_millis(t.t1_ms),
            Duration::from_millis(t.t2_ms),
            Duration::from_millis(t.t4_ms),
        )?;
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let us = Identities::new(bound.transport.listeners());
        let access = access_by_listener(config, bound.transport.listeners())?;
        let core = Core {
            access,
            transport: bound.transport,
            hooks,
            stats: commands.stats,
            us,
            router: Router::new(&config.proxy),
            record_route: config.proxy.record_route,
            max_forwards: config.proxy.max_forwards,
            timer_config,
            timers: TimerQueue::new(),
            servers: FxHashMap::default(),
            server_index: HashMap::new(),
            clients: FxHashMap::default(),
            client_index: FxHashMap::default(),
            contexts: FxHashMap::default(),
            pending_jobs: FxHashMap::default(),
            parked: FxHashMap::default(),
            resolver: Resolver::default(),
            internal,
            instance: rand::random(),
            next_id: 1,
            draining: None,
        };
        Ok(Proxy {
            core,
            udp: bound.udp,
            events: bound.events,
            commands: commands.commands,
            internal_rx,
        })
    }

    /// Runs until a shutdown command has been served: in-flight transactions finished or the
    /// grace period ran out.
    pub async fn run(mut self) {
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let mut timer = Box::pin(tokio::time::sleep_until(far));
        let mut timer_at: Option<Instant> = None;
        let mut grace = Box::pin(tokio::time::sleep_until(far));
        let mut turn = 0u32;
        loop {
            if let Some(deadline) = self.core.draining {
                if self.core.drained() {
                    tracing::info!("in-flight transactions finished, stopping");
                    break;
                }
                grace.as_mut().reset(deadline.into());
            }
            let next = self.core.timers.next_deadline();
            if next != timer_at {
                timer_at = next;
                timer.as_mut().reset(next.map_or(far, Into::into));
            }
            turn = turn.wrapping_add(1);
            let event = poll_fn(|cx| {
                // Alternate which source goes first so a UDP flood cannot starve TCP or timers.
                if turn.is_multiple_of(2)
                    && let Poll::Ready((data, source)) = self.udp.poll_recv(cx)
                {
                    return Poll::Ready(Event::Datagram(data, source));
                }
                if timer_at.is_some() && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
                if let Poll::Ready(Some(event)) = self.events.poll_recv(cx) {
                    return Poll::Ready(Event::Transport(event));
                }
                if let Poll::Ready(Some(command)) = self.commands.poll_recv(cx) {
                    return Poll::Ready(Event::Command(command));
                }
                if let Poll::Ready(Some(internal)) = self.internal_rx.poll_recv(cx) {
                    return Poll::Ready(Event::Internal(internal));
                }
                if let Poll::Ready((data, source)) = self.udp.poll_recv(cx) {
                    return Poll::Ready(Event::Datagram(data, source));
                }
                if self.core.draining.is_some() && grace.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::GraceOver);
                }
                Poll::Pending
            })
            .await;
            let now = Instant::now();
            match event {
                Event::Datagram(data, source) => self.core.on_message(data, source, now),
                Event::Transport(event) => self.core.on_transport_event(event, now),
                Event::Command(command) => self.core.on_command(command, now),
                Event::Internal(internal) => self.core.on_internal(internal, now),
                Event::Timer => {
                    timer_at = None;
                    self.core.on_timers(now);
                }
                Event::GraceOver => {
                    tracing::warn!(
                        contexts = self.core.contexts.len(),
                        "shutdown grace period over, stopping with transactions in flight"
                    );
                    break;
                }
            }
        }
        self.core.transport.close_all();
    }
}

/// The hop-by-hop ACK for a 3xx–6xx final response to `request` (RFC 3261 §17.1.1.3): its To
/// is the response's, which carries the callee's tag.
fn build_ack(request: &Message, response: &Message) -> Option<Bytes> {
    build_same_branch(request, Method::Ack, response.header("To")?)
}

/// A CANCEL for a request sent on a branch (RFC 3261 §9.1).
fn build_cancel(request: &Message) -> Option<Bytes> {
    build_same_branch(request, Method::Cancel, request.header("To")?)
}

/// A request on the same branch as `request` (ACK for a non-2xx, CANCEL): same R-URI, top
/// Via, Route, From, Call-ID and CSeq number, with the method and To given.
fn build_same_branch(request: &Message, method: Method, to: &str) -> Option<Bytes> {
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

/// Where a response goes by its (top) Via, RFC 3261 §18.2.2 with RFC 3581.
fn via_destination(via: &Via<'_>) -> Option<(TransportKind, SocketAddr)> {
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

/// §16.7 step 6 ranking of final responses: lower is better.
fn rank(status: u16) -> u8 {
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
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn new_branch(&mut self, hash: u64) -> String {
        let counter = self.next_id();
        make_branch(hash, self.instance, counter)
    }

    fn new_tag(&mut self) -> String {
        let counter = self.next_id();
        format!("{:08x}{counter:x}", self.instance)
    }

    fn drained(&self) -> bool {
        self.contexts.is_empty()
            && self.pending_jobs.is_empty()
            && self.parked.is_empty()
            && !self
                .clients
                .values()
                .any(|c| matches!(c.owner, Owner::Local(Some(_))))
    }

    fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::SendRequest {
                request,
                next_hop,
                reply,
            } => self.local_request(*request, next_hop, reply, now),
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
        let token = self.next_id();
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
            Submitted::NoFilter(call) => {
                let decision = Decision::Continue;
                self.resume(parked, HookResult { call, decision }, now);
            }
            Submitted::Overloaded(call) => {
                let decision = match call {
                    HookCall::Request { .. } => {
                        ProxyStats::bump(&self.stats.overloaded);
                        Decision::Reply {
                            code: 503,
                            reason: reason_for(503).to_owned(),
                            headers: vec![(
                                "Retry-After".to_owned(),
                                OVERLOAD_RETRY_AFTER.to_owned(),
                            )],
                        }
                    }
                    // Their transaction exists already: never refused, the filter is skipped.
                    HookCall::Reply { .. } | HookCall::Failure { .. } => Decision::Continue,
                };
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
        self.transport.on_event(&event);
        match event {
            TransportEvent::Message { data, source } => self.on_message(data, source, now),
            TransportEvent::Opened { .. } => {}
            TransportEvent::Closed { conn, failed, .. } => {
                if !failed {
                    return;
                }
                let affected: Vec<u64> = self
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
        let expired: Vec<TimerKey> = self.timers.pop_expired(now).collect();
        for key in expired {
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
                    // §16.8: CANCEL the branch and answer upstream as if it timed out; the
                    // machine has no timer left in "Proceeding", so drop it here.
                    self.cancel_branch(id, now);
                    self.client_failed(id, 408, now);
                    self.remove_client(id);
                }
            }
        }
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

    /// Hands bytes to the transport; a TCP peer dropped for not reading is counted.
    fn transmit(
        &mut self,
        kind: TransportKind,
        listener: usize,
        remote: SocketAddr,
        conn: Option<ConnId>,
        data: Bytes,
    ) -> Result<Option<ConnId>, SendFailure> {
        let sent = self.transport.send(kind, listener, remote, conn, data);
        if let Err(SendFailure::WriteQueueFull(_)) = sent {
            ProxyStats::bump(&self.stats.slow_peers_dropped);
        }
        sent
    }

    /// Sends bytes back the way a message came: its connection if open, else the address.
    fn send_to_source(&mut self, source: Source, remote: SocketAddr, data: Bytes) {
        if let Err(e) = self.transmit(source.kind, source.listener, remote, source.conn, data) {
            tracing::debug!(%remote, error = %e, "send failed");
        }
    }

    fn on_request(&mut self, mut msg: Message, source: Source, now: Instant) {
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
    fn reply_stateless(
        &mut self,
        request: &Message,
        source: Source,
        reply_to: SocketAddr,
        status: u16,
    ) {
        self.reply_stateless_with(request, source, reply_to, status, reason_for(status), &[]);
    }

    fn reply_stateless_with(
        &mut self,
        request: &Message,
        source: Source,
        reply_to: SocketAddr,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
    ) {
        ProxyStats::bump(&self.stats.local_replies);
        let tag = (status > 100).then(|| self.new_tag());
        let mut response = request.response(status, reason, tag.as_deref());
        for (name, value) in headers {
            response.append_header(name, value);
        }
        self.send_to_source(source, reply_to, response.to_bytes());
    }

    /// The tenant's access check (see `crate::access`): `None` when the request was
    /// answered or dropped here, else the identified endpoint (if any), with our realm's
    /// credentials removed from the request.
    fn admit(
        &mut self,
        msg: &mut Message,
        source: &Source,
        reply_to: SocketAddr,
    ) -> Option<Option<String>> {
        let Some(access) = self.access.get_mut(&source.listener) else {
            return Some(None);
        };
        let target = match msg.request_uri().map(Uri::parse) {
            Some(Ok(uri)) if uri.user.is_none() && self.us.is_us(uri.host, uri.port) => {
                Target::Local
            }
            _ => Target::Relayed,
        };
        // Nonces carry wall-clock time so they stay checkable across restarts.
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let reply = match access.check(msg, source.remote, target, wall) {
            Verdict::Allow(endpoint) => {
                access.consume_credentials(msg);
                return Some(endpoint.map(|e| e.name.to_string()));
            }
            Verdict::Drop => return None,
            Verdict::Challenge(reply) | Verdict::Refuse(reply) => reply,
        };
        ProxyStats::bump(&self.stats.local_replies);
        self.send_to_source(*source, reply_to, reply.to_bytes());
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn new_request(
        &mut self,
        msg: Message,
        key: ServerKey,
        method: Method,
        source: Source,
        reply_to: SocketAddr,
        endpoint: Option<String>,
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
        let server_id = self.next_id();
        let machine =
            ServerTransaction::new(kind, source.kind.is_reliable(), self.timer_config, now);
        self.server_index.insert(key.clone(), server_id);
        self.servers.insert(
            server_id,
            ServerEntry {
                machine,
                key,
                source,
                reply_to,
                request: Some(msg.clone()),
                last_response: None,
                context: None,
                cancelled: false,
            },
        );
        self.drive_server(server_id);

        // §16.4: route information preprocessing.
        let mut request = msg;
        let ctx_id = self.next_id();
        let record_route_params =
            (self.record_route && wants_record_route(&request)).then(String::new);
        let mut hook = self.routed_hook_context(
            &mut request,
            &source,
            format!("{:08x}-{ctx_id:x}", self.instance),
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
    fn request_decided(&mut self, parked: ParkedRequest, result: HookResult, now: Instant) {
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
                ProxyStats::bump(&self.stats.local_replies);
                self.respond(server_id, response, now);
                return;
            }
            Decision::Forward { next_hop } => Ok(next_hop),
            Decision::Resend { .. } | Decision::Continue => {
                if hook.next_hop != preliminary {
                    hook.next_hop.clone().ok_or(())
                } else if request.request_uri().map(str::to_owned) != ruri_before {
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
        request.set_header("Max-Forwards", &forwards.to_string());
        hook.next_hop = Some(next_hop.clone());
        self.contexts.insert(
            ctx_id,
            Context {
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
            },
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
    fn respond_local(&mut self, server_id: u64, status: u16, now: Instant) {
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
    fn respond(&mut self, server_id: u64, response: Message, now: Instant) {
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
        let sent = self.transmit(source.kind, source.listener, reply_to, source.conn, bytes);
        match sent {
            Ok(conn) => {
                if let (Some(conn), Some(entry)) = (conn, self.servers.get_mut(&server_id)) {
                    entry.source.conn = Some(conn);
                }
            }
            Err(e) => {
                tracing::debug!(remote = %reply_to, error = %e, "response send failed");
                if let Some(entry) = self.servers.get_mut(&server_id) {
                    let _ = entry.machine.on_transport_error(now);
                }
            }
        }
        self.drive_server(server_id);
    }

    /// Performs a server machine's actions. Returns true when an ACK was passed up.
    fn drive_server(&mut self, id: u64) -> bool {
        let mut ack_passed_up = false;
        loop {
            let Some(entry) = self.servers.get_mut(&id) else {
                return ack_passed_up;
            };
            let Some(action) = entry.machine.poll_action() else {
                let at = entry.machine.poll_timeout();
                self.timers.set(TimerKey::Server(id), at);
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

    fn remove_server(&mut self, id: u64) {
        if let Some(entry) = self.servers.remove(&id) {
            if self.server_index.get(&entry.key) == Some(&id) {
                self.server_index.remove(&entry.key);
            }
            self.timers.cancel(&TimerKey::Server(id));
        }
    }

    fn on_cancel(&mut self, msg: Message, source: Source, reply_to: SocketAddr, now: Instant) {
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
        let server_id = self.next_id();
        let machine = ServerTransaction::new(
            Kind::NonInvite,
            source.kind.is_reliable(),
            self.timer_config,
            now,
        );
        self.server_index.insert(cancel_key.clone(), server_id);
        self.servers.insert(
            server_id,
            ServerEntry {
                machine,
                key: cancel_key,
                source,
                reply_to,
                request: Some(msg),
                last_response: None,
                context: None,
                cancelled: false,
            },
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

    /// §16.10: CANCEL every pending branch (those without a provisional response yet are
    /// cancelled as soon as one arrives, §9.1).
    fn cancel_context(&mut self, ctx_id: u64, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&ctx_id) else {
            return;
        };
        ctx.cancelled = true;
        let branches = ctx.branches.clone();
        for id in branches {
            self.cancel_branch(id, now);
        }
    }

    fn cancel_branch(&mut self, id: u64, now: Instant) {
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
        let cancel_id = self.next_id();
        let machine = ClientTransaction::new(
            Kind::NonInvite,
            dest.kind.is_reliable(),
            self.timer_config,
            now,
        );
        self.client_index.insert(key.clone(), cancel_id);
        self.clients.insert(
            cancel_id,
            ClientEntry {
                machine,
                key,
                request: None,
                bytes,
                dest,
                owner: Owner::Cancel,
                provisional: false,
                cancel_on_provisional: false,
                finished: false,
            },
        );
        self.drive_client(cancel_id, None, now);
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
            .transport
            .listener(source.listener)
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

    /// §16.11 stateless forwarding along the route set, for requests no transaction takes:
    /// ACKs for 2xx and CANCELs without a response context (§16.10). The branch is derived
    /// from the upstream transaction's identity, so retransmissions leave with the same one.
    fn forward_stateless(
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
            (
                upstream,
                stateless_branch(&format!("{}|{}", key.branch, key.sent_by)),
            )
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
    fn stateless_decided(&mut self, parked: ParkedStateless, result: HookResult, now: Instant) {
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
            } => {
                if let Some(original) = &original {
                    let headers: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(n, v)| (n.as_str(), v.as_str()))
                        .collect();
                    self.reply_stateless_with(original, source, reply_to, code, &reason, &headers);
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

    fn local_request(
        &mut self,
        mut request: Message,
        next_hop: Option<String>,
        reply: oneshot::Sender<Result<Message, SendError>>,
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
            let _ = reply.send(Err(e));
            return;
        }
        if request.max_forwards().is_none() {
            request.set_header("Max-Forwards", &self.max_forwards.to_string());
        }
        let next_hop = match next_hop {
            Some(hop) => hop,
            None => match self.router.next_hop(&request, &self.us) {
                Ok(hop) => hop,
                Err(e) => {
                    let _ = reply.send(Err(SendError::NoRoute(e.0)));
                    return;
                }
            },
        };
        self.dispatch(&next_hop, Job::Local { request, reply }, now);
    }

    /// Resolves the next hop (at once for IP literals and cached names, else on a task) and
    /// then sends the job.
    fn dispatch(&mut self, next_hop: &str, job: Job, now: Instant) {
        let hop = match NextHop::from_uri(next_hop) {
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
        let token = self.next_id();
        self.pending_jobs.insert(token, job);
        let internal = self.internal.clone();
        tokio::spawn(async move {
            let result = Resolver::lookup(hop.host.clone(), hop.port).await;
            let _ = internal.send(Internal::Resolved { token, hop, result });
        });
    }

    /// A job whose next hop gave no address: a proxied branch ends with `status`, a local
    /// request with `why`.
    fn job_failed(&mut self, job: Job, status: u16, why: SendError, now: Instant) {
        match job {
            Job::Branch { ctx, .. } => self.branch_failed(ctx, None, status, now),
            Job::Stateless { .. } => tracing::debug!(%why, "stateless request not forwarded"),
            Job::Local { reply, .. } => {
                let _ = reply.send(Err(why));
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
                let Some(listener) = self.transport.pick_listener(kind, Some(inbound), &addr)
                else {
                    tracing::debug!(%kind, "no listener for a stateless request");
                    return;
                };
                let Some(via) = self
                    .transport
                    .listener(listener)
                    .map(|l| via_value(l, &branch))
                else {
                    return;
                };
                request.prepend_header("Via", &via);
                ProxyStats::bump(&self.stats.forwarded);
                if let Err(e) = self.transmit(kind, listener, addr, None, request.to_bytes()) {
                    tracing::debug!(%addr, error = %e, "stateless request send failed");
                }
            }
            Job::Local { mut request, reply } => {
                let Some(listener) = self.transport.pick_listener(kind, None, &addr) else {
                    let _ = reply.send(Err(SendError::NoListener(kind)));
                    return;
                };
                let has_branch = request.top_via().is_some_and(|v| v.branch().is_some());
                if !has_branch {
                    let hash = loop_hash(&request);
                    let branch = self.new_branch(hash);
                    if request.top_via().is_some() {
                        request.set_top_via_param("branch", Some(&branch));
                    } else if let Some(l) = self.transport.listener(listener) {
                        let via = via_value(l, &branch);
                        request.prepend_header("Via", &via);
                    }
                }
                let Some(branch) = request
                    .top_via()
                    .and_then(|v| v.branch().map(Box::<str>::from))
                else {
                    let _ = reply.send(Err(SendError::Invalid("no Via")));
                    return;
                };
                let kind_of_request = request.method().map_or(Kind::NonInvite, kind_of);
                let dest = Destination {
                    kind,
                    listener,
                    remote: addr,
                    conn: None,
                };
                self.start_client(
                    (branch, false),
                    kind_of_request,
                    request,
                    dest,
                    Owner::Local(Some(reply)),
                    now,
                );
            }
        }
    }

    /// Sends one branch of a proxied request: Record-Route (fresh requests), our Via, and a
    /// client transaction.
    fn send_branch(
        &mut self,
        ctx_id: u64,
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
        let Some(listener) = self.transport.pick_listener(kind, inbound, &addr) else {
            tracing::debug!(%kind, "no listener to forward over");
            self.branch_failed(ctx_id, None, 503, now);
            return;
        };
        if fresh && let Some(params) = &ctx.hook.record_route_params {
            // Double Record-Route when the request changes sockets, so each side of the
            // dialog reaches us on the socket it knows (the outbound one ends up on top).
            if let Some(inbound) = inbound
                && inbound != listener
                && let Some(l) = self.transport.listener(inbound)
            {
                request.prepend_header("Record-Route", &record_route_value(l, params));
            }
            if let Some(l) = self.transport.listener(listener) {
                request.prepend_header("Record-Route", &record_route_value(l, params));
            }
        }
        let hash = ctx.loop_hash;
        let is_invite = ctx.is_invite;
        let branch = self.new_branch(hash);
        let Some(via) = self
            .transport
            .listener(listener)
            .map(|l| via_value(l, &branch))
        else {
            return;
        };
        request.prepend_header("Via", &via);
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

    fn start_client(
        &mut self,
        key: ClientKey,
        kind: Kind,
        request: Message,
        dest: Destination,
        owner: Owner,
        now: Instant,
    ) -> u64 {
        let id = self.next_id();
        let machine = ClientTransaction::new(kind, dest.kind.is_reliable(), self.timer_config, now);
        let bytes = request.to_bytes();
        self.client_index.insert(key.clone(), id);
        self.clients.insert(
            id,
            ClientEntry {
                machine,
                key,
                request: Some(request),
                bytes,
                dest,
                owner,
                provisional: false,
                cancel_on_provisional: false,
                finished: false,
            },
        );
        self.drive_client(id, None, now);
        id
    }

    fn remove_client(&mut self, id: u64) {
        if let Some(entry) = self.clients.remove(&id) {
            if self.client_index.get(&entry.key) == Some(&id) {
                self.client_index.remove(&entry.key);
            }
            self.timers.cancel(&TimerKey::Client(id));
            self.timers.cancel(&TimerKey::ProxyC(id));
        }
    }

    /// Performs a client machine's actions; `response` is the response just fed to it.
    fn drive_client(&mut self, id: u64, mut response: Option<Message>, now: Instant) {
        loop {
            let Some(entry) = self.clients.get_mut(&id) else {
                return;
            };
            let Some(action) = entry.machine.poll_action() else {
                let at = entry.machine.poll_timeout();
                self.timers.set(TimerKey::Client(id), at);
                return;
            };
            match action {
                ClientAction::Transmit => {
                    let dest = entry.dest;
                    let bytes = entry.bytes.clone();
                    match self.transmit(dest.kind, dest.listener, dest.remote, dest.conn, bytes) {
                        Ok(conn) => {
                            if let (Some(conn), Some(entry)) = (conn, self.clients.get_mut(&id)) {
                                entry.dest.conn = Some(conn);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(remote = %dest.remote, error = %e, "request send failed");
                            if let Some(entry) = self.clients.get_mut(&id) {
                                let _ = entry.machine.on_transport_error(now);
                            }
                        }
                    }
                }
                ClientAction::SendAck => {
                    let ack = match (&entry.request, &response) {
                        (Some(request), Some(resp)) => build_ack(request, resp),
                        _ => None,
                    };
                    if let Some(ack) = ack {
                        let dest = entry.dest;
                        if let Err(e) =
                            self.transmit(dest.kind, dest.listener, dest.remote, dest.conn, ack)
                        {
                            tracing::debug!(error = %e, "ACK send failed");
                        }
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
    fn client_failed(&mut self, id: u64, status: u16, now: Instant) {
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
            Owner::Local(reply) => {
                if let Some(reply) = reply.take() {
                    let error = if status == 408 {
                        SendError::Timeout
                    } else {
                        SendError::Transport(entry.dest.remote)
                    };
                    let _ = reply.send(Err(error));
                }
            }
            Owner::Cancel => {}
        }
    }

    /// A branch ended without a response from downstream: a local final (408, 503, 487)
    /// built from the original request takes its place.
    fn branch_failed(&mut self, ctx_id: u64, client: Option<u64>, status: u16, now: Instant) {
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

    fn pass_up(&mut self, id: u64, status: u16, response: Message, now: Instant) {
        let Some(entry) = self.clients.get_mut(&id) else {
            return;
        };
        match &mut entry.owner {
            Owner::Cancel => {}
            Owner::Local(reply) => {
                if status >= 200 {
                    entry.finished = true;
                    if let Some(reply) = reply.take() {
                        let _ = reply.send(Ok(response));
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

    /// A response from downstream on a branch (§16.7).
    fn branch_response(
        &mut self,
        ctx_id: u64,
        client_id: u64,
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
    fn submit_reply(&mut self, ctx_id: u64, reply: QueuedReply, now: Instant) {
        let Some(ctx) = self.contexts.get_mut(&ctx_id) else {
            return;
        };
        ctx.hook_busy = true;
        let call = HookCall::Reply {
            ctx: ctx.hook.clone(),
            msg: reply.response,
        };
        let parked = ParkedReply {
            ctx: ctx_id,
            client: reply.client,
            status: reply.status,
            request: reply.request,
        };
        self.submit_hook(call, Parked::Reply(parked), now);
    }

    /// The filters decided on a reply: relay a provisional, or rank a final.
    fn reply_decided(&mut self, reply: ParkedReply, result: HookResult, now: Instant) {
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
    fn next_in_lane(&mut self, ctx_id: u64, now: Instant) {
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
    fn branch_final(
        &mut self,
        ctx_id: u64,
        client_id: Option<u64>,
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
    fn maybe_finish(&mut self, ctx_id: u64, now: Instant) {
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
    fn failure_decided(&mut self, ctx_id: u64, result: HookResult, now: Instant) {
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

    fn maybe_close_context(&mut self, ctx_id: u64) {
        let done = self.contexts.get(&ctx_id).is_some_and(|c| {
            c.final_sent && c.outstanding == 0 && !c.hook_busy && c.queued_replies.is_empty()
        });
        if done
            && let Some(ctx) = self.contexts.remove(&ctx_id)
            && let Some(server) = self.servers.get_mut(&ctx.server)
        {
            server.context = None;
        }
    }

    /// §16.7 for responses matching no transaction, and §18.2.2 routing: remove our Via and
    /// send to the next one.
    fn forward_response_statelessly(&mut self, response: Message) {
        let Some((kind, addr)) = response.top_via().as_ref().and_then(via_destination) else {
            tracing::debug!("response with no usable Via dropped");
            return;
        };
        let Some(listener) = self.transport.pick_listener(kind, None, &addr) else {
            return;
        };
        if let Err(e) = self.transmit(kind, listener, addr, None, response.to_bytes()) {
            tracing::debug!(%addr, error = %e, "stateless response send failed");
        }
    }

    fn on_response(&mut self, msg: Message, _source: Source, now: Instant) {
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

/// Builds each tenant's access control and files it under the listeners the tenant owns.
fn access_by_listener(
    config: &Config,
    listeners: &[crate::transport::Listener],
) -> Result<FxHashMap<usize, AccessControl>, ProxyError> {
    use crate::runtime::config::{ListenTransport, parse_listen};
    let mut by_listener = FxHashMap::default();
    for tenant in &config.tenant {
        let Some(access) = &tenant.access else {
            continue;
        };
        for entry in &tenant.listen {
            let (transport, address) =
                parse_listen(entry).map_err(|why| ProxyError::TenantListen {
                    tenant: tenant.name.clone(),
                    why,
                })?;
            let kind = match transport {
                ListenTransport::Udp => TransportKind::Udp,
                ListenTransport::Tcp => TransportKind::Tcp,
            };
            // One instance per listener: the UDP and TCP sockets of a tenant keep separate
            // replay tables and buckets, which only makes each smaller.
            let control =
                AccessControl::new(&tenant.name, access, rand::random()).map_err(|source| {
                    ProxyError::Access {
                        tenant: tenant.name.clone(),
                        source,
                    }
                })?;
            for (i, listener) in listeners.iter().enumerate() {
                if listener.kind == kind && listener.local == address {
                    by_listener.insert(i, control);
                    break;
                }
            }
        }
    }
    Ok(by_listener)
}
