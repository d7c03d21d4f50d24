//! TCP: accept loops, outgoing connects, and one task per connection that frames incoming
//! bytes by Content-Length, writes queued messages, and closes after the idle timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use siphost_sip::{Framing, frame_stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;

use super::{ConnId, ConnQueue, Source, TcpShared, TransportEvent, TransportKind, conn_queue};

/// How long an outgoing connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

pub(super) async fn accept_loop(listener: TcpListener, index: usize, shared: TcpShared) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.open.load(Ordering::Relaxed) >= shared.max_connections {
            tracing::debug!(%remote, "TCP connection refused: limit reached");
            drop(stream);
            continue;
        }
        shared.open.fetch_add(1, Ordering::Relaxed);
        let conn = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (writer, queue) = conn_queue(shared.write_queue);
        let opened = TransportEvent::Opened {
            conn,
            remote,
            listener: index,
            writer,
        };
        if shared.events.send(opened).await.is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        tokio::spawn(run(stream, conn, remote, index, queue, shared.clone()));
    }
}

/// Connects to `remote` for a connection the core already registered, then runs it.
pub(super) async fn connect(
    conn: ConnId,
    remote: SocketAddr,
    listener: usize,
    queue: ConnQueue,
    shared: TcpShared,
) {
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(remote)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            run(stream, conn, remote, listener, queue, shared).await;
        }
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TCP connect failed");
            closed(&shared, conn, remote, true).await;
        }
        Err(_) => {
            tracing::debug!(%remote, "TCP connect timed out");
            closed(&shared, conn, remote, true).await;
        }
    }
}

async fn closed(shared: &TcpShared, conn: ConnId, remote: SocketAddr, failed: bool) {
    shared.open.fetch_sub(1, Ordering::Relaxed);
    let _ = shared
        .events
        .send(TransportEvent::Closed {
            conn,
            remote,
            failed,
        })
        .await;
}

async fn run(
    mut stream: TcpStream,
    conn: ConnId,
    remote: SocketAddr,
    listener: usize,
    mut queue: ConnQueue,
    shared: TcpShared,
) {
    let source = Source {
        kind: TransportKind::Tcp,
        listener,
        remote,
        conn: Some(conn),
    };
    let mut buffer = BytesMut::with_capacity(8192);
    let idle = tokio::time::sleep(shared.idle_timeout);
    tokio::pin!(idle);
    let failed = loop {
        tokio::select! {
            read = stream.read_buf(&mut buffer) => {
                match read {
                    Ok(0) => break false,
                    Ok(_) => {
                        idle.as_mut().reset(Instant::now() + shared.idle_timeout);
                        match deliver_frames(&mut buffer, source, &shared, &mut stream).await {
                            Ok(()) => {}
                            Err(why) => {
                                tracing::debug!(%remote, why, "closing TCP connection");
                                break true;
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%remote, error = %e, "TCP read failed");
                        break true;
                    }
                }
            }
            outgoing = queue.queue.recv() => {
                let Some(data) = outgoing else { break false };
                idle.as_mut().reset(Instant::now() + shared.idle_timeout);
                // A peer that stops reading blocks this write; the core gives up on it when
                // the queue behind it is full.
                tokio::select! {
                    written = stream.write_all(&data) => {
                        if let Err(e) = written {
                            tracing::debug!(%remote, error = %e, "TCP write failed");
                            break true;
                        }
                    }
                    () = queue.abandon.notified() => break true,
                }
            }
            () = queue.abandon.notified() => break true,
            () = &mut idle => {
                tracing::debug!(%remote, "closing idle TCP connection");
                break false;
            }
        }
    };
    let _ = stream.shutdown().await;
    closed(&shared, conn, remote, failed).await;
}

/// Splits complete messages off `buffer` and hands them to the core. Keep-alive CRLFs are
/// answered per RFC 5626 §4.4.1 (a double CRLF ping gets a single CRLF pong).
async fn deliver_frames(
    buffer: &mut BytesMut,
    source: Source,
    shared: &TcpShared,
    stream: &mut TcpStream,
) -> Result<(), &'static str> {
    loop {
        match frame_stream(buffer) {
            Framing::Complete(len) => {
                let frame = buffer.split_to(len).freeze();
                if frame.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    if frame.len() >= 4 {
                        stream
                            .write_all(b"\r\n")
                            .await
                            .map_err(|_| "keep-alive pong failed")?;
                    }
                    continue;
                }
                let event = TransportEvent::Message {
                    data: frame,
                    source,
                };
                shared
                    .events
                    .send(event)
                    .await
                    .map_err(|_| "core stopped")?;
            }
            Framing::Incomplete => {
                if buffer.len() > siphost_sip::MAX_MESSAGE_SIZE {
                    return Err("message too large");
                }
                return Ok(());
            }
            Framing::Invalid(e) => {
                tracing::debug!(remote = %source.remote, error = %e, "unframeable TCP stream");
                if let Some(reply) = siphost_sip::reply_to_malformed(buffer, &e) {
                    let _ = stream.write_all(&reply).await;
                }
                return Err("invalid framing");
            }
        }
    }
}
