//! The outside door into the proxy core: locally originated requests (filters' send-request,
//! uac_req_send), shutdown, and counters, all through one command queue.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use siphost_sip::Message;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::access::AccessCounters;
use crate::transport::{NextHopError, ResolveError, TransportKind};

/// How many commands may wait for the core.
const COMMAND_QUEUE: usize = 4096;

/// Why a locally originated request got no final reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendError {
    #[error("the proxy is not running")]
    Stopped,
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    #[error("no route: {0}")]
    NoRoute(&'static str),
    #[error("unusable next hop: {0}")]
    NextHop(#[from] NextHopError),
    #[error("next hop not resolved: {0}")]
    Unresolved(Arc<ResolveError>),
    #[error("no {0} listener to send from")]
    NoListener(TransportKind),
    #[error("no {0} listener on {1} to send from")]
    NoSuchListener(TransportKind, SocketAddr),
    #[error("sending to {0} failed")]
    Transport(SocketAddr),
    #[error("no final response before the transaction timed out")]
    Timeout,
}

/// Where the final reply to a locally originated request goes: called once, on the
/// proxy's thread that finished the transaction, so it must not block. A sink dropped
/// unanswered (the core stopped with the request queued or in flight) answers
/// [`SendError::Stopped`], so its sender always hears back.
pub struct ReplySink(Option<Box<ReplyFn>>);

type ReplyFn = dyn FnOnce(Result<Answered, SendError>) + Send;

impl ReplySink {
    pub fn new(f: impl FnOnce(Result<Answered, SendError>) + Send + 'static) -> Self {
        ReplySink(Some(Box::new(f)))
    }

    pub fn send(mut self, answer: Result<Answered, SendError>) {
        if let Some(f) = self.0.take() {
            f(answer);
        }
    }
}

impl Drop for ReplySink {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f(Err(SendError::Stopped));
        }
    }
}

/// What the core is asked to do from outside.
pub(crate) enum Command {
    SendRequest {
        // Boxed: a parsed message is large, and commands are rare beside datagrams.
        request: Box<Message>,
        how: Origination,
        reply: ReplySink,
    },
    Shutdown {
        grace: Duration,
    },
}

/// How a locally originated request leaves and how long it may wait, beyond what its
/// own headers say (Kamailio's `$uac_req(ouri)`, `sock`, `fr_timeout`, `fr_inv_timeout`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origination {
    /// Send there instead of routing the request (a SIP URI).
    pub next_hop: Option<String>,
    /// Send from this listener (its transport and bound address) instead of the first one
    /// that fits; the next hop must use the same transport.
    pub local: Option<(TransportKind, SocketAddr)>,
    /// Give up (and CANCEL an INVITE that got a provisional reply) when no reply has come
    /// this long after sending; a non-INVITE's final reply, an INVITE's first reply.
    pub timeout: Option<Duration>,
    /// Once an INVITE got a provisional reply, give up when no further reply has come this
    /// long after the last one (each 1xx restarts it) and CANCEL it; none: RFC 3261's Timer C.
    pub invite_timeout: Option<Duration>,
}

/// The final response to a locally originated request, and the peer it came from.
#[derive(Debug, Clone)]
pub struct Answered {
    pub response: Message,
    pub transport: TransportKind,
    pub peer: SocketAddr,
}

/// Counters kept by the core; read them any time through [`ProxyHandle::stats`].
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub requests: AtomicU64,
    pub responses: AtomicU64,
    pub malformed: AtomicU64,
    pub forwarded: AtomicU64,
    /// Initial INVITEs (no To tag) that reached the filters' door, filtered or not.
    pub calls: AtomicU64,
    pub local_replies: AtomicU64,
    /// Requests answered 503 because their tenant's filter queue was full.
    pub overloaded: AtomicU64,
    /// TCP connections closed because the peer stopped reading (`[tcp] write_queue` full).
    pub slow_peers_dropped: AtomicU64,
    /// Each tenant's access counters (tenants with `[tenant.access]`), set once by the core.
    pub access: OnceLock<Vec<(String, Arc<AccessCounters>)>>,
    /// Messages each shard of the core handled (read there or handed to it), set once by the
    /// proxy: how evenly calls spread.
    pub shard_messages: OnceLock<Box<[AtomicU64]>>,
}

impl ProxyStats {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A cloneable handle to the running proxy core.
#[derive(Clone)]
pub struct ProxyHandle {
    commands: mpsc::Sender<Command>,
    stats: Arc<ProxyStats>,
}

/// The core's end of the command queue, given to [`super::Proxy::new`].
pub struct CommandReceiver {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) stats: Arc<ProxyStats>,
}

impl ProxyHandle {
    /// A handle and the receiver the proxy core will read; create them before the filter
    /// runtime (which needs the handle) and the proxy (which needs the runtime's hooks).
    pub fn channel() -> (ProxyHandle, CommandReceiver) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let stats = Arc::new(ProxyStats::default());
        (
            ProxyHandle {
                commands: tx,
                stats: stats.clone(),
            },
            CommandReceiver {
                commands: rx,
                stats,
            },
        )
    }

    /// Sends a locally originated request through a client transaction and returns its final
    /// response. Missing Via (or its branch), Max-Forwards and Content-Length are filled in;
    /// Call-ID, CSeq, From and To must be present. Without `how.next_hop` the request goes to
    /// its top Route, a matching `[[proxy.route]]`, its Request-URI, or the default route. For
    /// an INVITE answered 2xx the caller sends the ACK (as a new request).
    pub async fn send_request(
        &self,
        request: Message,
        how: Origination,
    ) -> Result<Answered, SendError> {
        let (reply, wait) = oneshot::channel();
        self.send_request_then(
            request,
            how,
            ReplySink::new(move |answer| {
                let _ = reply.send(answer);
            }),
        );
        wait.await.map_err(|_| SendError::Stopped)?
    }

    /// [`ProxyHandle::send_request`] with a sink instead of a future, for a caller on a
    /// thread of its own (a filter worker): `reply` gets the outcome from the core directly,
    /// with no task in between. When the command queue is full such a caller waits for room;
    /// inside a tokio runtime a task waits instead.
    pub fn send_request_then(&self, request: Message, how: Origination, reply: ReplySink) {
        let command = Command::SendRequest {
            request: Box::new(request),
            how,
            reply,
        };
        // A command the core never gets drops its sink, which answers `Stopped`.
        match self.commands.try_send(command) {
            Ok(()) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(command)) => match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    let commands = self.commands.clone();
                    runtime.spawn(async move {
                        let _ = commands.send(command).await;
                    });
                }
                Err(_) => {
                    let _ = self.commands.blocking_send(command);
                }
            },
        }
    }

    /// Asks the core to stop taking new transactions and to exit once in-flight ones have
    /// finished, or after `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.commands.send(Command::Shutdown { grace }).await;
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}
