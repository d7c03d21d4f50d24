//! The driver: one tokio task per shard that reads the sockets, runs the resolver's tasks and
//! the timer, feeds its core one event at a time, and hands other shards what they own.

use super::*;

enum Event {
    Datagram(Datagram),
    /// From a TCP task (shard 0).
    Transport(TransportEvent),
    Handoff(Handoff),
    /// From the command queue (shard 0).
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
    #[error(
        "tenant {0:?}: [tenant.access.credentials] is configured but its table was not \
         opened (CredentialTables::open)"
    )]
    CredentialsNotOpened(String),
}

/// The proxy: build with [`Proxy::new`], then [`Proxy::run`] until shutdown.
pub struct Proxy {
    shards: Vec<Shard>,
}

/// What one shard hands another: a message it read that the other owns, a TCP connection
/// event every shard must know, a command, and while shutting down: (to shard 0) that it has
/// nothing in flight, and (from shard 0) that every shard is there and it may stop.
enum Handoff {
    Message(Bytes, Source),
    Transport(TransportEvent),
    Command(Command),
    Drained,
    Stop,
}

/// One shard of the proxy: a core with its own tables and timers, and the driver that feeds
/// it. Every shard reads the UDP sockets; shard 0 also reads the TCP tasks' events and the
/// command queue. A message goes to the shard that owns it ([`ShardMap::owner`]).
struct Shard {
    index: usize,
    core: Core,
    transport: Transport,
    /// For the resolver's tasks to answer the core.
    internal: mpsc::UnboundedSender<Internal>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
    udp: UdpReceiver,
    map: ShardMap,
    /// Every shard's inbox, this one's included.
    inboxes: Arc<[mpsc::UnboundedSender<Handoff>]>,
    inbox: mpsc::UnboundedReceiver<Handoff>,
    /// Reused room for the hand-offs taken ahead of a datagram this shard read itself.
    earlier: Vec<Handoff>,
    /// Shard 0 only: the TCP tasks' events and the command queue.
    front: Option<Front>,
    /// Shutting down, this shard told shard 0 it has nothing in flight.
    reported_drained: bool,
    /// Shard 0 said every shard has drained.
    stop: bool,
}

/// The single-consumer queues shard 0 reads for every shard.
struct Front {
    events: mpsc::Receiver<TransportEvent>,
    commands: mpsc::Receiver<Command>,
    /// Other shards that have nothing left in flight. Until all have, every shard keeps
    /// running (refusing new calls), so none misses what another hands it.
    drained: usize,
}

impl Proxy {
    /// A proxy over bound sockets, calling `hooks` at each routing point.
    pub fn new(
        config: &Config,
        bound: Bound,
        hooks: Arc<dyn FilterHooks>,
        commands: CommandReceiver,
    ) -> Result<Proxy, ProxyError> {
        Self::with_credentials(config, bound, hooks, commands, &CredentialTables::default())
    }

    /// As [`Proxy::new`], with the tenants' credentials tables (`[tenant.access.credentials]`)
    /// opened by the caller (see [`CredentialTables::open`]).
    pub fn with_credentials(
        config: &Config,
        bound: Bound,
        hooks: Arc<dyn FilterHooks>,
        commands: CommandReceiver,
        credentials: &CredentialTables,
    ) -> Result<Proxy, ProxyError> {
        let listeners = bound.transport.listeners().to_vec();
        let shared = CoreShared {
            access: access::access_by_listener(config, &listeners, &commands.stats, credentials)?,
            hooks,
            stats: commands.stats,
            conn_ids: bound.transport.conn_ids(),
        };
        let map = ShardMap::new(config.proxy.shards, rand::random());
        // Already set when a second proxy shares these stats (tests); the first one's stay.
        let _ = (shared.stats.shard_messages)
            .set((0..map.count()).map(|_| AtomicU64::new(0)).collect());
        let (inboxes, receivers): (Vec<_>, Vec<_>) =
            (0..map.count()).map(|_| mpsc::unbounded_channel()).unzip();
        let inboxes: Arc<[_]> = inboxes.into();
        let mut front = Some(Front {
            events: bound.events,
            commands: commands.commands,
            drained: 0,
        });
        let mut shards = Vec::with_capacity(map.count());
        for (index, inbox) in receivers.into_iter().enumerate() {
            let (internal, internal_rx) = mpsc::unbounded_channel();
            let core = Core::new(
                config,
                listeners.clone(),
                &shared,
                internal.clone(),
                map.instance(index),
            )?;
            shards.push(Shard {
                index,
                core,
                transport: bound.transport.share(),
                internal,
                internal_rx,
                udp: bound.udp.share(),
                map,
                inboxes: inboxes.clone(),
                inbox,
                earlier: Vec::new(),
                front: front.take(),
                reported_drained: false,
                stop: false,
            });
        }
        Ok(Proxy { shards })
    }

    /// Runs until a shutdown command has been served: in-flight transactions finished or the
    /// grace period ran out.
    pub async fn run(self) {
        let mut shards = self.shards.into_iter();
        let first = shards.next();
        // A set, so dropping this future (an aborted proxy task) stops every shard.
        let mut others = tokio::task::JoinSet::new();
        for shard in shards {
            others.spawn(shard.run());
        }
        if let Some(first) = first {
            first.run().await;
        }
        while others.join_next().await.is_some() {}
    }
}

/// How late a transaction timer may run when no event wakes its shard first:
/// a sixteenth of T1, at most 10 ms (a retransmission 2% late at the default T1).
fn timer_slack(t1: Duration) -> Duration {
    (t1 / 16).min(Duration::from_millis(10))
}

impl Shard {
    /// Carries out what the core asked for. A connection that cannot take a message goes back
    /// to the core as failed, which fails the transactions using it.
    fn carry_out(&mut self) {
        while let Some(output) = self.core.outputs.pop_front() {
            match output {
                Output::Datagram {
                    listener,
                    remote,
                    data,
                } => {
                    if let Err(e) = self.transport.send_udp(listener, remote, &data) {
                        tracing::debug!(%remote, error = %e, "UDP send failed");
                    }
                }
                Output::Connect {
                    conn,
                    remote,
                    listener,
                } => {
                    if let Err(e) = self.transport.connect(conn, remote, listener) {
                        tracing::debug!(%remote, error = %e, "TCP connection not opened");
                        self.connection_failed(conn, remote);
                    }
                }
                Output::Stream { conn, data } => match self.transport.write(conn, data) {
                    Ok(()) => {}
                    Err(SendFailure::WriteQueueFull(remote)) => {
                        ProxyStats::bump(&self.core.stats.slow_peers_dropped);
                        self.connection_failed(conn, remote);
                    }
                    Err(e) => tracing::debug!(conn, error = %e, "TCP message not queued"),
                },
                Output::Resolve { job, hop } => {
                    let internal = self.internal.clone();
                    tokio::spawn(async move {
                        let result = Resolver::lookup(hop.host.clone(), hop.port).await;
                        let _ = internal.send(Internal::Resolved {
                            token: job,
                            hop,
                            result,
                        });
                    });
                }
            }
        }
    }

    fn connection_failed(&mut self, conn: ConnId, remote: SocketAddr) {
        let closed = TransportEvent::Closed {
            conn,
            remote,
            failed: true,
        };
        self.core.on_transport_event(closed, Instant::now());
    }

    /// A message this shard read: handled here when it owns it, else handed to its owner. A
    /// datagram comes with its socket's read turn, let go only after a hand-off (on return).
    /// One this shard owns comes after what other shards read before it and handed over (they
    /// did so holding the turn): those are taken from the inbox while the turn is still held,
    /// so none read later slips in ahead.
    fn deliver(&mut self, data: Bytes, source: Source, turn: Option<ReadTurn>, now: Instant) {
        let owner = self.map.owner(&data).unwrap_or(self.index);
        if owner != self.index {
            self.hand_off(owner, Handoff::Message(data, source));
            return;
        }
        if let Some(turn) = turn {
            let mut earlier = std::mem::take(&mut self.earlier);
            earlier.extend(std::iter::from_fn(|| self.inbox.try_recv().ok()));
            drop(turn);
            for handoff in earlier.drain(..) {
                self.on_handoff(handoff, now);
            }
            self.earlier = earlier;
        }
        self.on_message(data, source, now);
    }

    fn on_message(&mut self, data: Bytes, source: Source, now: Instant) {
        if let Some(counter) = self
            .core
            .stats
            .shard_messages
            .get()
            .and_then(|c| c.get(self.index))
        {
            ProxyStats::bump(counter);
        }
        self.core.on_message(data, source, now);
    }

    fn hand_off(&self, shard: usize, handoff: Handoff) {
        // An inbox closes only when its shard has stopped, and its transactions with it.
        let _ = self.inboxes[shard].send(handoff);
    }

    /// Hands every other shard its own copy of a hand-off.
    fn hand_to_others(&self, handoff: impl Fn() -> Handoff) {
        for shard in (0..self.map.count()).filter(|&s| s != self.index) {
            self.hand_off(shard, handoff());
        }
    }

    /// A TCP task's event (shard 0): a message goes to its owner, a connection opened or
    /// closed to every shard, since any of them may send on it.
    fn on_tcp_event(&mut self, event: TransportEvent, now: Instant) {
        if let TransportEvent::Message { data, source } = event {
            self.deliver(data, source, None, now);
            return;
        }
        self.hand_to_others(|| Handoff::Transport(event.clone()));
        self.on_connection_event(event, now);
    }

    fn on_connection_event(&mut self, event: TransportEvent, now: Instant) {
        self.transport.on_event(&event);
        self.core.on_transport_event(event, now);
    }

    /// A command (shard 0): a request goes to the shard its Call-ID picks, so its replies and
    /// the rest of its dialog stay on one shard; a shutdown goes to every shard.
    fn on_front_command(&mut self, command: Command, now: Instant) {
        let owner = match &command {
            Command::SendRequest { request, .. } => request
                .call_id()
                .map_or(self.index, |id| self.map.shard_of_call_id(id.as_bytes())),
            Command::Shutdown { grace } => {
                let grace = *grace;
                self.hand_to_others(|| Handoff::Command(Command::Shutdown { grace }));
                self.index
            }
        };
        if owner == self.index {
            self.core.on_command(command, now);
        } else {
            self.hand_off(owner, Handoff::Command(command));
        }
    }

    fn on_handoff(&mut self, handoff: Handoff, now: Instant) {
        match handoff {
            Handoff::Message(data, source) => self.on_message(data, source, now),
            Handoff::Transport(event) => self.on_connection_event(event, now),
            Handoff::Command(command) => self.core.on_command(command, now),
            Handoff::Drained => {
                if let Some(front) = &mut self.front {
                    front.drained += 1;
                }
            }
            Handoff::Stop => self.stop = true,
        }
    }

    /// Whether this shard may stop now that it is shutting down. Draining is one way (new
    /// transactions are refused), so a shard reports it once; shard 0 stops every shard when
    /// all have.
    fn may_stop(&mut self) -> bool {
        if !self.core.drained() {
            return false;
        }
        let Some(front) = &self.front else {
            if !self.reported_drained {
                self.reported_drained = true;
                self.hand_off(0, Handoff::Drained);
            }
            return self.stop;
        };
        if front.drained + 1 < self.map.count() {
            return false;
        }
        self.hand_to_others(|| Handoff::Stop);
        true
    }

    /// Runs until a shutdown command has been served: in-flight transactions finished or the
    /// grace period ran out.
    async fn run(mut self) {
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let mut timer = Box::pin(tokio::time::sleep_until(far));
        let mut timer_at: Option<Instant> = None;
        let slack = timer_slack(self.core.timer_config.t1());
        let mut grace = Box::pin(tokio::time::sleep_until(far));
        let mut turn = 0u32;
        loop {
            if let Some(deadline) = self.core.draining {
                if self.may_stop() {
                    tracing::info!(
                        shard = self.index,
                        "in-flight transactions finished, stopping"
                    );
                    break;
                }
                grace.as_mut().reset(deadline.into());
            }
            // Due timers run after any event (below); the sleep only bounds how late they
            // run when nothing else happens, and is re-armed only for an earlier bound.
            // Re-armed at every change, and fired for every deadline, it cost a tokio timer
            // re-registration each time, and an eventfd write waking the thread parked in
            // epoll_wait (about one per two calls relayed).
            if let Some(at) = self.core.timers.next_deadline() {
                let wake = at + slack;
                if timer_at.is_none_or(|armed| wake < armed) {
                    timer_at = Some(wake);
                    timer.as_mut().reset(wake.into());
                }
            }
            turn = turn.wrapping_add(1);
            let event = poll_fn(|cx| {
                // Alternate which source goes first so a UDP flood cannot starve TCP or timers.
                if turn.is_multiple_of(2)
                    && let Poll::Ready(datagram) = self.udp.poll_recv(cx)
                {
                    return Poll::Ready(Event::Datagram(datagram));
                }
                if timer_at.is_some() && timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Timer);
                }
                if let Poll::Ready(Some(handoff)) = self.inbox.poll_recv(cx) {
                    return Poll::Ready(Event::Handoff(handoff));
                }
                if let Some(front) = &mut self.front {
                    if let Poll::Ready(Some(event)) = front.events.poll_recv(cx) {
                        return Poll::Ready(Event::Transport(event));
                    }
                    if let Poll::Ready(Some(command)) = front.commands.poll_recv(cx) {
                        return Poll::Ready(Event::Command(command));
                    }
                }
                if let Poll::Ready(Some(internal)) = self.internal_rx.poll_recv(cx) {
                    return Poll::Ready(Event::Internal(internal));
                }
                if let Poll::Ready(datagram) = self.udp.poll_recv(cx) {
                    return Poll::Ready(Event::Datagram(datagram));
                }
                if self.core.draining.is_some() && grace.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::GraceOver);
                }
                Poll::Pending
            })
            .await;
            let now = Instant::now();
            match event {
                Event::Datagram(Datagram { data, source, turn }) => {
                    self.deliver(data, source, Some(turn), now)
                }
                Event::Transport(event) => self.on_tcp_event(event, now),
                Event::Handoff(handoff) => self.on_handoff(handoff, now),
                Event::Command(command) => self.on_front_command(command, now),
                Event::Internal(internal) => self.core.on_internal(internal, now),
                Event::Timer => timer_at = None,
                Event::GraceOver => {
                    tracing::warn!(
                        shard = self.index,
                        contexts = self.core.contexts.len(),
                        "shutdown grace period over, stopping with transactions in flight"
                    );
                    break;
                }
            }
            if self.core.timers.next_deadline().is_some_and(|at| at <= now) {
                self.core.on_timers(now);
            }
            self.carry_out();
        }
        self.transport.close_all();
    }
}
