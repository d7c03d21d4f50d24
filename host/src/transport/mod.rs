//! UDP and TCP listeners, connection reuse, framing (RFC 3261 §18, RFC 3581).
//! The proxy core owns a [`Transport`]; socket tasks report to it through [`TransportEvent`]s.

mod resolve;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Notify, mpsc};

pub use crate::config::TransportKind;
pub use resolve::{NextHop, NextHopError, ResolveError, Resolver};
pub use udp::{Datagram, ReadTurn, UdpReceiver, UdpSocket};

use crate::config::Config;

/// Identifies one TCP connection for its whole life.
pub type ConnId = u64;

/// How many transport events may wait for the core before TCP readers pause.
const EVENT_QUEUE: usize = 8192;

/// One bound `[[listen]]` socket and the name it goes by in Via / Record-Route.
#[derive(Debug, Clone)]
pub struct Listener {
    pub kind: TransportKind,
    /// The address actually bound (port 0 resolved).
    pub local: SocketAddr,
    /// Host written into Via sent-by and Record-Route.
    pub host: String,
}

impl Listener {
    /// `host:port` as written in Via sent-by.
    pub fn sent_by(&self) -> HostPort<'_> {
        HostPort(&self.host, self.local.port())
    }
}

/// `host:port`, bracketing IPv6 literals, written where it is formatted (no string of its own).
#[derive(Debug, Clone, Copy)]
pub struct HostPort<'a>(pub &'a str, pub u16);

impl std::fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let HostPort(host, port) = *self;
        if host.contains(':') && !host.starts_with('[') {
            write!(f, "[{host}]:{port}")
        } else {
            write!(f, "{host}:{port}")
        }
    }
}

/// `host:port`, bracketing IPv6 literals.
pub fn format_host_port(host: &str, port: u16) -> String {
    HostPort(host, port).to_string()
}

/// Where a message came from: transport, the listener it arrived on, the peer, and for TCP
/// the connection (responses go back over it, RFC 3261 §18.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub kind: TransportKind,
    pub listener: usize,
    pub remote: SocketAddr,
    pub conn: Option<ConnId>,
}

/// What socket tasks tell the core.
#[derive(Debug, Clone)]
pub enum TransportEvent {
    /// A complete SIP message (TCP frames; UDP is read by the core itself).
    Message { data: Bytes, source: Source },
    /// A TCP connection was accepted or established; messages may be sent on it.
    Opened {
        conn: ConnId,
        remote: SocketAddr,
        listener: usize,
        writer: ConnWriter,
    },
    /// A TCP connection ended (peer close, idle timeout, error, or connect failure).
    Closed {
        conn: ConnId,
        remote: SocketAddr,
        failed: bool,
    },
}

/// Why a message could not be handed to the network.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SendFailure {
    #[error("no {0} listener to send from")]
    NoListener(TransportKind),
    #[error("too many TCP connections")]
    TooManyConnections,
    #[error("TCP peer {0} stopped reading: its write queue is full, connection dropped")]
    WriteQueueFull(SocketAddr),
    #[error("socket error: {0}")]
    Socket(Arc<io::Error>),
    #[error("TCP connection {0} is closed")]
    Gone(ConnId),
}

/// The core's end of one TCP connection: its bounded write queue, and the signal that makes
/// the connection's task close it when the peer stopped reading.
#[derive(Debug, Clone)]
pub struct ConnWriter {
    queue: mpsc::Sender<Bytes>,
    abandon: Arc<Notify>,
}

/// The connection task's end of a [`ConnWriter`].
pub(crate) struct ConnQueue {
    pub(crate) queue: mpsc::Receiver<Bytes>,
    pub(crate) abandon: Arc<Notify>,
}

/// A write queue holding up to `limit` messages.
pub(crate) fn conn_queue(limit: usize) -> (ConnWriter, ConnQueue) {
    let (queue, receiver) = mpsc::channel(limit);
    let abandon = Arc::new(Notify::new());
    (
        ConnWriter {
            queue,
            abandon: abandon.clone(),
        },
        ConnQueue {
            queue: receiver,
            abandon,
        },
    )
}

/// One open TCP connection as the driver keeps it: its write queue and its peer.
#[derive(Clone)]
struct Connection {
    writer: ConnWriter,
    remote: SocketAddr,
}

/// Settings shared with connection tasks.
#[derive(Clone)]
pub(crate) struct TcpShared {
    pub(crate) events: mpsc::Sender<TransportEvent>,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) write_queue: usize,
    pub(crate) open: Arc<AtomicUsize>,
    pub(crate) next_id: Arc<AtomicU64>,
}

/// Bound sockets plus the write queues of open TCP connections; owned by the proxy's driver,
/// which carries out what the core decides (which connection carries what).
pub struct Transport {
    listeners: Vec<Listener>,
    udp: Vec<Option<Arc<UdpSocket>>>,
    connections: HashMap<ConnId, Connection>,
    tcp: TcpShared,
}

/// Everything [`Transport::bind`] produces: the transport, the UDP sockets for the core to
/// read, and the queue TCP tasks report to.
pub struct Bound {
    pub transport: Transport,
    pub udp: UdpReceiver,
    pub events: mpsc::Receiver<TransportEvent>,
}

impl Transport {
    /// Binds every `[[listen]]` socket and starts the TCP accept loops.
    pub async fn bind(config: &Config) -> io::Result<Bound> {
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let tcp = TcpShared {
            events: events_tx,
            idle_timeout: Duration::from_millis(config.tcp.idle_timeout_ms),
            max_connections: config.tcp.max_connections,
            write_queue: config.tcp.write_queue,
            open: Arc::new(AtomicUsize::new(0)),
            next_id: Arc::new(AtomicU64::new(1)),
        };
        let mut listeners = Vec::with_capacity(config.listen.len());
        let mut udp = Vec::with_capacity(config.listen.len());
        let mut udp_read = Vec::new();
        for (index, listen) in config.listen.iter().enumerate() {
            let (local, socket) = match listen.transport {
                TransportKind::Udp => {
                    let socket = Arc::new(udp::bind(listen.address)?);
                    let local = socket.local_addr()?;
                    udp_read.push((index, socket.clone()));
                    (local, Some(socket))
                }
                TransportKind::Tcp => {
                    let listener = tcp::bind(listen.address)?;
                    let local = listener.local_addr()?;
                    tokio::spawn(tcp::accept_loop(listener, index, tcp.clone()));
                    (local, None)
                }
            };
            let host = match &listen.advertise {
                Some(host) => host.clone(),
                None => advertised_ip(local.ip()).to_string(),
            };
            listeners.push(Listener {
                kind: listen.transport,
                local,
                host,
            });
            udp.push(socket);
        }
        Ok(Bound {
            transport: Transport {
                listeners,
                udp,
                connections: HashMap::new(),
                tcp,
            },
            udp: UdpReceiver::new(udp_read),
            events: events_rx,
        })
    }

    /// A transport over the same sockets for another shard of the core: it sends from the
    /// same UDP sockets and learns TCP connections from the events it is given.
    pub fn share(&self) -> Transport {
        Transport {
            listeners: self.listeners.clone(),
            udp: self.udp.clone(),
            connections: self.connections.clone(),
            tcp: self.tcp.clone(),
        }
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    pub fn listener(&self, index: usize) -> Option<&Listener> {
        self.listeners.get(index)
    }

    /// The counter TCP connection ids come from; the core takes ids for the connections it
    /// opens from it too, so accepted and opened ones never share one.
    pub fn conn_ids(&self) -> Arc<AtomicU64> {
        self.tcp.next_id.clone()
    }

    /// Sends over UDP from `listener`. A full socket buffer drops the datagram: UDP is lossy
    /// and the transaction layer retransmits.
    pub fn send_udp(&self, listener: usize, remote: SocketAddr, data: &[u8]) -> io::Result<()> {
        let Some(Some(socket)) = self.udp.get(listener) else {
            return Err(io::Error::other("not a UDP listener"));
        };
        match socket.try_send_to(data, remote) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tracing::debug!(%remote, "UDP send buffer full, datagram dropped");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Opens connection `conn` to `remote`; messages written to it wait until it is up.
    pub fn connect(
        &mut self,
        conn: ConnId,
        remote: SocketAddr,
        listener: usize,
    ) -> Result<(), SendFailure> {
        if self.tcp.open.load(Ordering::Relaxed) >= self.tcp.max_connections {
            return Err(SendFailure::TooManyConnections);
        }
        let (writer, queue) = conn_queue(self.tcp.write_queue);
        self.connections.insert(conn, Connection { writer, remote });
        self.tcp.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(tcp::connect(
            conn,
            remote,
            listener,
            queue,
            self.tcp.clone(),
        ));
        Ok(())
    }

    /// Queues a message on connection `conn`. A connection whose write queue is full is
    /// closed: its peer stopped reading.
    pub fn write(&mut self, conn: ConnId, data: Bytes) -> Result<(), SendFailure> {
        let Some(connection) = self.connections.get(&conn) else {
            return Err(SendFailure::Gone(conn));
        };
        match connection.writer.queue.try_send(data) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                let remote = connection.remote;
                tracing::warn!(
                    %remote,
                    limit = self.tcp.write_queue,
                    "TCP peer stopped reading, closing its connection"
                );
                connection.writer.abandon.notify_one();
                self.connections.remove(&conn);
                Err(SendFailure::WriteQueueFull(remote))
            }
            Err(TrySendError::Closed(_)) => {
                self.connections.remove(&conn);
                Err(SendFailure::Gone(conn))
            }
        }
    }

    /// Applies a connection event to the table of write queues.
    pub fn on_event(&mut self, event: &TransportEvent) {
        match event {
            TransportEvent::Opened {
                conn,
                remote,
                writer,
                ..
            } => {
                let connection = Connection {
                    writer: writer.clone(),
                    remote: *remote,
                };
                self.connections.insert(*conn, connection);
            }
            TransportEvent::Closed { conn, .. } => {
                self.connections.remove(conn);
            }
            TransportEvent::Message { .. } => {}
        }
    }

    /// Closes every TCP connection (their tasks end when their queues close).
    pub fn close_all(&mut self) {
        self.connections.clear();
    }
}

/// The listener to send from towards a peer over `kind`: the preferred one when it has that
/// transport, else the first of that transport with the same IP family, else any.
pub fn pick_listener(
    listeners: &[Listener],
    kind: TransportKind,
    preferred: Option<usize>,
    remote: &SocketAddr,
) -> Option<usize> {
    if let Some(index) = preferred
        && listeners.get(index).is_some_and(|l| l.kind == kind)
    {
        return Some(index);
    }
    let same_family = listeners
        .iter()
        .position(|l| l.kind == kind && l.local.is_ipv4() == remote.is_ipv4());
    same_family.or_else(|| listeners.iter().position(|l| l.kind == kind))
}

/// The IP to advertise for a socket bound to `ip`: itself, or for a wildcard bind the address
/// of the interface that routes outwards (no packet is sent), falling back to loopback.
fn advertised_ip(ip: IpAddr) -> IpAddr {
    if !ip.is_unspecified() {
        return ip;
    }
    let probe = if ip.is_ipv4() {
        ("0.0.0.0:0", "192.0.2.1:9")
    } else {
        ("[::]:0", "[2001:db8::1]:9")
    };
    std::net::UdpSocket::bind(probe.0)
        .and_then(|s| s.connect(probe.1).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .unwrap_or(if ip.is_ipv4() {
            IpAddr::from([127, 0, 0, 1])
        } else {
            IpAddr::from([0, 0, 0, 0, 0, 0, 0, 1])
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_write_queue_drops_the_connection() {
        let config = Config::parse(
            "[[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:0\"\n[tcp]\nwrite_queue = 2\n",
        )
        .expect("config");
        let mut transport = Transport::bind(&config).await.expect("bind").transport;
        let remote: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        // A connection whose task never drains its queue, as when the peer stopped reading.
        let (writer, mut stuck) = conn_queue(config.tcp.write_queue);
        transport.on_event(&TransportEvent::Opened {
            conn: 7,
            remote,
            listener: 0,
            writer,
        });
        let message = Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\n\r\n");
        for _ in 0..2 {
            let written = transport.write(7, message.clone());
            assert!(written.is_ok(), "{written:?}");
        }
        let written = transport.write(7, message.clone());
        assert!(
            matches!(written, Err(SendFailure::WriteQueueFull(peer)) if peer == remote),
            "{written:?}"
        );
        tokio::time::timeout(Duration::from_secs(1), stuck.abandon.notified())
            .await
            .expect("the connection's task is told to close");
        assert!(transport.connections.is_empty());
        assert!(matches!(
            transport.write(7, message),
            Err(SendFailure::Gone(7))
        ));
        // What was queued is still there for the task; nothing more was added.
        let mut queued = 0;
        while stuck.queue.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, 2);
    }
}
