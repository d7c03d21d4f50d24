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
}

/// The proxy: build with [`Proxy::new`], then [`Proxy::run`] until shutdown.
pub struct Proxy {
    core: Core,
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
        let t = &config.transaction;
        let timer_config = TimerConfig::new(
            Duration::from_millis(t.t1_ms),
            Duration::from_millis(t.t2_ms),
            Duration::from_millis(t.t4_ms),
        )?;
        let (internal, internal_rx) = mpsc::unbounded_channel();
        let us = Identities::new(bound.transport.listeners());
        let core = Core {
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
