//! UDP sockets: bound with large kernel buffers, read by the proxy core itself (no task or
//! channel hop per datagram) through [`UdpReceiver::poll_recv`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::ReadBuf;
use tokio::net::UdpSocket;

use super::{Source, TransportKind};

/// Kernel buffer size asked for each UDP socket; bursts at thousands of calls per second
/// overflow the default.
const SOCKET_BUFFER: usize = 4 << 20;
/// Largest UDP datagram.
const MAX_DATAGRAM: usize = 65_535;

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
    UdpSocket::from_std(socket.into())
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
                let mut read = ReadBuf::new(&mut self.buffer);
                match shared.socket.poll_recv_from(cx, &mut read) {
                    Poll::Ready(Ok(remote)) => {
                        // Own allocation per datagram: a message kept by a transaction must
                        // not pin a large shared receive buffer.
                        let data = Bytes::copy_from_slice(read.filled());
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
