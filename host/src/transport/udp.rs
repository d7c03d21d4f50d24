//! UDP sockets: bound with large kernel buffers, read by the proxy core itself (no task or
//! channel hop per datagram) through [`UdpReceiver::poll_recv`].
//!
//! A socket is registered with the reactor for reading only. Sends never wait (a full buffer
//! drops the datagram), and a socket registered for writing too would have the kernel wake the
//! thread parked in `epoll_wait` each time a sent datagram's buffer space is given back: on
//! loopback, once per datagram sent.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::{Source, TransportKind};

/// Kernel buffer size asked for each UDP socket; bursts at thousands of calls per second
/// overflow the default.
const SOCKET_BUFFER: usize = 4 << 20;
/// Largest UDP datagram.
const MAX_DATAGRAM: usize = 65_535;

/// A bound UDP socket, registered with the reactor for reading only.
pub struct UdpSocket(AsyncFd<std::net::UdpSocket>);

impl UdpSocket {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().local_addr()
    }

    /// Sends at once; a full send buffer is `WouldBlock`, never a wait.
    pub fn try_send_to(&self, data: &[u8], remote: SocketAddr) -> io::Result<usize> {
        self.0.get_ref().send_to(data, remote)
    }

    fn poll_recv_from(
        &self,
        cx: &mut Context<'_>,
        buffer: &mut [u8],
    ) -> Poll<io::Result<(usize, SocketAddr)>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            match ready.try_io(|socket| socket.get_ref().recv_from(buffer)) {
                Ok(read) => return Poll::Ready(read),
                // Readiness was stale: cleared, so the next poll waits for the reactor.
                Err(_would_block) => continue,
            }
        }
    }
}

pub(super) fn bind(address: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    // Buffer sizes are best effort: the kernel caps them at its configured maximum.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    let socket: std::net::UdpSocket = socket.into();
    // SAFETY: the std socket owns its descriptor, which stays open and the same until the
    // AsyncFd (which owns the socket and lends it only by shared reference) is dropped.
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
        .map(UdpSocket)
        .map_err(io::Error::from)
}

/// The UDP listeners, polled round-robin by the core loop.
pub struct UdpReceiver {
    sockets: Vec<SharedSocket>,
    buffer: Box<[u8]>,
    next: usize,
}

/// A listener's socket and the turn its readers take.
#[derive(Clone)]
struct SharedSocket {
    listener: usize,
    socket: Arc<UdpSocket>,
    reading: Arc<AtomicBool>,
}

/// A datagram and the reader's turn on its socket. While the turn is held no other reader
/// takes the next datagram: a reader that hands a datagram to its owner does so before it
/// lets go, so the owner, emptying its inbox before it handles what it read itself, sees one
/// peer's datagrams in the order the socket queued them (a 180 is never overtaken by the 200
/// behind it that another shard read).
pub struct Datagram {
    pub data: Bytes,
    pub source: Source,
    pub turn: ReadTurn,
}

/// Held from the read of a datagram until it is handed on; dropping it lets the next reader in.
pub struct ReadTurn(Arc<AtomicBool>);

impl ReadTurn {
    fn take(reading: &Arc<AtomicBool>) -> Option<ReadTurn> {
        reading
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then(|| ReadTurn(reading.clone()))
    }
}

impl Drop for ReadTurn {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl UdpReceiver {
    pub(super) fn new(sockets: Vec<(usize, Arc<UdpSocket>)>) -> Self {
        let sockets = sockets
            .into_iter()
            .map(|(listener, socket)| SharedSocket {
                listener,
                socket,
                reading: Arc::default(),
            })
            .collect();
        Self::over(sockets)
    }

    fn over(sockets: Vec<SharedSocket>) -> Self {
        UdpReceiver {
            sockets,
            buffer: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            next: 0,
        }
    }

    /// A receiver over the same sockets, with its own buffer, for another shard of the core:
    /// whichever shard polls a socket when a datagram is there reads it.
    pub fn share(&self) -> UdpReceiver {
        UdpReceiver::over(self.sockets.clone())
    }

    /// The next datagram from any UDP listener. Receive errors (ICMP port unreachable
    /// reported on the socket, for instance) are logged and skipped. A socket another reader
    /// is reading is passed over: that reader polls it again once its datagram is handed on.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Datagram> {
        let count = self.sockets.len();
        for offset in 0..count {
            let slot = (self.next + offset) % count;
            let Some(shared) = self.sockets.get(slot) else {
                continue;
            };
            let Some(turn) = ReadTurn::take(&shared.reading) else {
                continue;
            };
            loop {
                match shared.socket.poll_recv_from(cx, &mut self.buffer) {
                    Poll::Ready(Ok((len, remote))) => {
                        // Own allocation per datagram: a message kept by a transaction must
                        // not pin a large shared receive buffer.
                        let data = Bytes::copy_from_slice(&self.buffer[..len]);
                        self.next = (slot + 1) % count;
                        let source = Source {
                            kind: TransportKind::Udp,
                            listener: shared.listener,
                            remote,
                            conn: None,
                        };
                        return Poll::Ready(Datagram { data, source, turn });
                    }
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "UDP receive error");
                    }
                    Poll::Pending => break,
                }
            }
        }
        Poll::Pending
    }
}
