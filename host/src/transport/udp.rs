//! UDP sockets: bound with large kernel buffers, read by the proxy core itself (no task or
//! channel hop per datagram) through [`UdpReceiver::poll_recv`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
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
    sockets: Vec<(usize, Arc<UdpSocket>)>,
    buffer: Box<[u8]>,
    next: usize,
}

impl UdpReceiver {
    pub(super) fn new(sockets: Vec<(usize, Arc<UdpSocket>)>) -> Self {
        UdpReceiver {
            sockets,
            buffer: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            next: 0,
        }
    }

    /// A receiver over the same sockets, with its own buffer, for another shard of the core:
    /// whichever shard polls a socket when a datagram is there reads it.
    pub fn share(&self) -> UdpReceiver {
        UdpReceiver::new(self.sockets.clone())
    }

    /// The next datagram from any UDP listener. Receive errors (ICMP port unreachable
    /// reported on the socket, for instance) are logged and skipped.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<(Bytes, Source)> {
        let count = self.sockets.len();
        for offset in 0..count {
            let slot = (self.next + offset) % count;
            let Some((listener, socket)) = self.sockets.get(slot) else {
                continue;
            };
            loop {
                let mut read = ReadBuf::new(&mut self.buffer);
                match socket.poll_recv_from(cx, &mut read) {
                    Poll::Ready(Ok(remote)) => {
                        // Own allocation per datagram: a message kept by a transaction must
                        // not pin a large shared receive buffer.
                        let data = Bytes::copy_from_slice(read.filled());
                        self.next = (slot + 1) % count;
                        return Poll::Ready((
                            data,
                            Source {
                                kind: TransportKind::Udp,
                                listener: *listener,
                                remote,
                                conn: None,
                            },
                        ));
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
