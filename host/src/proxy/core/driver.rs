//! The driver: the tokio task that owns the sockets, the resolver's tasks and the timer, and
//! feeds the core one event at a time.

use super::*;

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
    #[error(
        "tenant {0:?}: [tenant.access.credentials] is configured but its table was not \
         opened (CredentialTables::open)"
    )]
    CredentialsNotOpened(String),
}

/// The proxy: build with [`Proxy::new`], then [`Proxy::run`] until shutdown.
pub struct Proxy {
    core: Core,
    transport: Transport,
    /// For the resolver's tasks to answer the core.
    internal: mpsc::UnboundedSender<Internal>,
    udp: UdpReceiver,
    events: mpsc::Receiver<TransportEvent>,
    commands: mpsc::Receiver<Command>,
    internal_rx: mpsc::UnboundedReceiver<Internal>,
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
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let listeners = bound.transport.listeners().to_vec();
        let conn_ids = bound.transport.conn_ids();
        let core = Core::new(
            config,
            listeners,
            conn_ids,
            hooks,
            commands.stats,
            internal.clone(),
            credentials,
        )?;
        Ok(Proxy {
            core,
            transport: bound.transport,
            internal,
            udp: bound.udp,
            events: bound.events,
            commands: commands.commands,
            internal_rx,
        })
    }

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
                Event::Transport(event) => {
                    self.transport.on_event(&event);
                    self.core.on_transport_event(event, now);
                }
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
            self.carry_out();
        }
        self.transport.close_all();
    }
}
