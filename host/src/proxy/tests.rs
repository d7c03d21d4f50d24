//! In-process loopback tests: the proxy runs on 127.0.0.1 ephemeral ports and test sockets
//! play UAC and UAS with hand-written SIP.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use siphost_sip::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::hooks::{
    Decision, FilterHooks, HookCall, HookContext, HookDone, HookResult, NoFilters, Submitted,
};
use super::{Proxy, ProxyHandle};
use crate::config::Config;
use crate::transport::Transport;

const WAIT: Duration = Duration::from_secs(3);

struct Harness {
    udp: SocketAddr,
    tcp: SocketAddr,
    handle: ProxyHandle,
    task: tokio::task::JoinHandle<()>,
}

async fn start(config_tail: &str, hooks: Arc<dyn FilterHooks>) -> Harness {
    let text = format!(
        "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:0\"\n\
         [[listen]]\ntransport = \"tcp\"\naddress = \"127.0.0.1:0\"\n{config_tail}"
    );
    let config = Config::parse(&text).expect("test config");
    let bound = Transport::bind(&config).await.expect("bind");
    let listeners = bound.transport.listeners();
    let (udp, tcp) = (listeners[0].local, listeners[1].local);
    let (handle, commands) = ProxyHandle::channel();
    let proxy = Proxy::new(&config, bound, hooks, commands).expect("proxy");
    let task = tokio::spawn(proxy.run());
    Harness {
        udp,
        tcp,
        handle,
        task,
    }
}

/// SIP text from lines, with CRLF line ends and a Content-Length.
fn sip(lines: &[&str], body: &str) -> String {
    let mut text = lines.join("\r\n");
    text.push_str(&format!("\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    text
}

struct Peer {
    socket: UdpSocket,
    addr: SocketAddr,
}

impl Peer {
    async fn new() -> Peer {
        // Large buffers, as a real peer's: a burst of replies must not be lost in the kernel.
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("peer socket");
        socket.set_recv_buffer_size(4 << 20).expect("peer buffer");
        socket.set_nonblocking(true).expect("nonblocking");
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        socket.bind(&any.into()).expect("bind peer");
        let socket = UdpSocket::from_std(socket.into()).expect("tokio socket");
        let addr = socket.local_addr().expect("peer addr");
        Peer { socket, addr }
    }

    async fn send(&self, to: SocketAddr, text: &str) {
        self.socket
            .send_to(text.as_bytes(), to)
            .await
            .expect("peer send");
    }

    async fn recv(&self) -> Message {
        let mut buf = vec![0; 65_535];
        let (n, _) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
            .await
            .expect("a message within the wait")
            .expect("peer recv");
        Message::parse(Bytes::copy_from_slice(&buf[..n])).expect("proxy output parses")
    }

    /// Receives until a message other than a 100 Trying arrives.
    async fn recv_skip_trying(&self) -> Message {
        loop {
            let msg = self.recv().await;
            if msg.status() != Some(100) {
                return msg;
            }
        }
    }

    async fn recv_nothing(&self, wait: Duration) {
        let mut buf = vec![0; 65_535];
        if let Ok(Ok((n, _))) = tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
            panic!("unexpected message: {}", String::from_utf8_lossy(&buf[..n]));
        }
    }
}

fn invite(uac: &Peer, ruri: &str, branch: &str, call_id: &str) -> String {
    let via = format!("Via: SIP/2.0/UDP {};branch={branch};rport", uac.addr);
    let contact = format!("Contact: <sip:alice@{}>", uac.addr);
    let start = format!("INVITE {ruri} SIP/2.0");
    let cid = format!("Call-ID: {call_id}");
    sip(
        &[
            &start,
            &via,
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>",
            &cid,
            "CSeq: 1 INVITE",
            &contact,
            "Content-Type: application/sdp",
        ],
        "v=0\r\n",
    )
}

/// A response to `request` with the given status, echoing Via, Record-Route, From, To,
/// Call-ID and CSeq (plus a To tag and Contact for dialog-forming answers).
fn answer(request: &Message, status: u16, reason: &str, uas: &Peer) -> String {
    let mut lines = vec![format!("SIP/2.0 {status} {reason}")];
    for via in request.headers("Via") {
        lines.push(format!("Via: {via}"));
    }
    for rr in request.headers("Record-Route") {
        lines.push(format!("Record-Route: {rr}"));
    }
    lines.push(format!("From: {}", request.header("From").expect("From")));
    let to = request.header("To").expect("To");
    if request.to_tag().is_none() && status > 100 {
        lines.push(format!("To: {to};tag=b1"));
    } else {
        lines.push(format!("To: {to}"));
    }
    lines.push(format!("Call-ID: {}", request.call_id().expect("Call-ID")));
    lines.push(format!("CSeq: {}", request.header("CSeq").expect("CSeq")));
    lines.push(format!("Contact: <sip:bob@{}>", uas.addr));
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    sip(&refs, "")
}

/// Routes to `uas`, over four shards of the core: every loopback test's calls and replies
/// cross between shards whatever the machine's core count.
fn default_route(uas: &Peer) -> String {
    format!(
        "[proxy]\nrecord_route = true\nshards = {SHARDS}\ndefault_route = \"sip:{}\"\n",
        uas.addr
    )
}

const SHARDS: usize = 4;

#[tokio::test]
async fn calls_spread_over_the_shards_and_each_finishes_on_its_own() {
    let (uac, uas) = (Peer::new().await, Peer::new().await);
    let proxy = start(&default_route(&uas), Arc::new(NoFilters)).await;
    let ruri = format!("sip:bob@{}", proxy.udp);
    let calls = 24;
    for i in 0..calls {
        let call_id = format!("spread-{i}@uac");
        uac.send(
            proxy.udp,
            &invite(&uac, &ruri, &format!("z9hG4bKsp{i}"), &call_id),
        )
        .await;
    }
    let mut forwarded = Vec::new();
    for _ in 0..calls {
        forwarded.push(uas.recv().await);
    }
    // Every other call is answered; the rest are cancelled, and their CANCEL must find the
    // INVITE's transaction on the shard that holds it.
    let mut expected = Vec::new();
    for request in &forwarded {
        let call_id = request.call_id().expect("Call-ID").to_owned();
        let i: usize = call_id["spread-".len()..call_id.len() - "@uac".len()]
            .parse()
            .expect("call number");
        if i.is_multiple_of(2) {
            uas.send(proxy.udp, &answer(request, 200, "OK", &uas)).await;
            expected.push((call_id, 200));
        } else {
            uas.send(proxy.udp, &answer(request, 180, "Ringing", &uas))
                .await;
            let branch = format!("z9hG4bKsp{i}");
            uac.send(proxy.udp, &cancel_for(&uac, &ruri, &branch, &call_id))
                .await;
            // Skipping the ACKs of earlier 487s.
            let cancelled = loop {
                let msg = uas.recv().await;
                if msg.method() != Some(&siphost_sip::Method::Ack) {
                    break msg;
                }
            };
            assert_eq!(cancelled.method().map(|m| m.as_str()), Some("CANCEL"));
            uas.send(proxy.udp, &answer(&cancelled, 200, "OK", &uas))
                .await;
            uas.send(proxy.udp, &answer(request, 487, "Request Terminated", &uas))
                .await;
            expected.push((call_id, 487));
        }
    }
    let mut finals = Vec::new();
    while finals.len() < calls {
        let msg = uac.recv().await;
        let status = msg.status().expect("a response");
        if status >= 200
            && msg
                .cseq()
                .is_some_and(|c| c.1 == siphost_sip::Method::Invite)
        {
            finals.push((msg.call_id().expect("Call-ID").to_owned(), status));
        }
    }
    finals.sort();
    expected.sort();
    assert_eq!(finals, expected);
    let per_shard: Vec<u64> = proxy
        .handle
        .stats()
        .shard_messages
        .get()
        .expect("shard counters")
        .iter()
        .map(|n| n.load(std::sync::atomic::Ordering::Relaxed))
        .collect();
    assert_eq!(per_shard.len(), SHARDS);
    assert!(per_shard.iter().all(|&n| n > 0), "{per_shard:?}");
    proxy.task.abort();
}

/// Shards running in parallel all read the one UDP socket. A 180 and the 200 right behind it
/// must reach the caller in that order even when one shard reads the 180 and hands it to its
/// owner while another reads the 200: were the 200 handled first, the 180 would come after the
/// final response and be dropped (SIPp callers abort such a call).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ringing_and_the_answer_right_behind_it_keep_their_order_across_shards() {
    let (uac, uas) = (Peer::new().await, Arc::new(Peer::new().await));
    let proxy = start(&default_route(&uas), Arc::new(NoFilters)).await;
    let ruri = format!("sip:bob@{}", proxy.udp);
    let to = proxy.udp;
    let answering = {
        let uas = uas.clone();
        tokio::spawn(async move {
            loop {
                let invite = uas.recv().await;
                // Both in one go, as a UAS that answers at once sends them.
                let ringing = answer(&invite, 180, "Ringing", &uas);
                let ok = answer(&invite, 200, "OK", &uas);
                uas.send(to, &ringing).await;
                uas.send(to, &ok).await;
            }
        })
    };
    let (rounds, per_round) = (40, 50);
    let mut seen: std::collections::HashMap<String, Vec<u16>> = Default::default();
    let mut record = |msg: Message| {
        let status = msg.status().expect("a response");
        if status != 100 {
            let call_id = msg.call_id().expect("Call-ID").to_owned();
            seen.entry(call_id).or_default().push(status);
        }
        status
    };
    for round in 0..rounds {
        for i in 0..per_round {
            let call_id = format!("order-{round}-{i}@uac");
            let branch = format!("z9hG4bKor{round}x{i}");
            uac.send(proxy.udp, &invite(&uac, &ruri, &branch, &call_id))
                .await;
        }
        let mut answered = 0;
        while answered < per_round {
            if record(uac.recv().await) >= 200 {
                answered += 1;
            }
        }
    }
    // A 180 overtaken by its 200 would come last.
    let mut buf = vec![0; 65_535];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(300), uac.socket.recv_from(&mut buf)).await
    {
        record(Message::parse(Bytes::copy_from_slice(&buf[..n])).expect("parses"));
    }
    let out_of_order: Vec<_> = seen
        .into_iter()
        .filter(|(_, statuses)| statuses[..] != [180, 200])
        .collect();
    answering.abort();
    proxy.task.abort();
    assert!(
        out_of_order.is_empty(),
        "{} of {} calls did not see 180 then 200: {:?}",
        out_of_order.len(),
        rounds * per_round,
        &out_of_order[..out_of_order.len().min(5)]
    );
}

#[tokio::test]
async fn udp_call_flows_through_with_record_route_and_rport() {
    let (uac, uas) = (Peer::new().await, Peer::new().await);
    let proxy = start(&default_route(&uas), Arc::new(NoFilters)).await;
    let ruri = format!("sip:bob@{}", proxy.udp);
    uac.send(proxy.udp, &invite(&uac, &ruri, "z9hG4bKuac1", "call-1"))
        .await;

    let trying = uac.recv().await;
    assert_eq!(trying.status(), Some(100));

    let forwarded = uas.recv().await;
    assert_eq!(forwarded.request_uri(), Some(ruri.as_str()));
    assert_eq!(forwarded.max_forwards(), Some(69));
    let vias: Vec<&str> = forwarded.headers("Via").collect();
    assert_eq!(vias.len(), 2, "{vias:?}");
    let ours = forwarded.top_via().expect("top via");
    assert_eq!(ours.port, Some(proxy.udp.port()));
    assert!(ours.has_rfc3261_branch());
    let uac_via = siphost_sip::Via::parse(vias[1]).expect("uac via");
    assert_eq!(uac_via.rport(), Some(Some(uac.addr.port())), "rport filled");
    assert_eq!(uac_via.received(), Some("127.0.0.1"), "received with rport");
    let rr = format!("<sip:127.0.0.1:{};transport=udp;lr>", proxy.udp.port());
    assert_eq!(forwarded.header("Record-Route"), Some(rr.as_str()));
    assert_eq!(forwarded.body(), b"v=0\r\n");

    uas.send(proxy.udp, &answer(&forwarded, 180, "Ringing", &uas))
        .await;
    let ringing = uac.recv_skip_trying().await;
    assert_eq!(ringing.status(), Some(180));
    assert_eq!(ringing.headers("Via").count(), 1);

    uas.send(proxy.udp, &answer(&forwarded, 200, "OK", &uas))
        .await;
    let ok = uac.recv_skip_trying().await;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.header("Record-Route"), Some(rr.as_str()));

    // End-to-end ACK along the route set.
    let ack = sip(
        &[
            &format!("ACK sip:bob@{} SIP/2.0", uas.addr),
            &format!("Via: SIP/2.0/UDP {};branch=z9hG4bKuac2", uac.addr),
            &format!("Route: {rr}"),
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>;tag=b1",
            "Call-ID: call-1",
            "CSeq: 1 ACK",
        ],
        "",
    );
    uac.send(proxy.udp, &ack).await;
    let acked = uas.recv().await;
    assert_eq!(acked.method().map(|m| m.as_str()), Some("ACK"));
    assert_eq!(acked.header("Route"), None, "our Route removed");
    assert_eq!(acked.headers("Via").count(), 2);

    // BYE from the callee back through the proxy.
    let bye = sip(
        &[
            &format!("BYE sip:alice@{} SIP/2.0", uac.addr),
            &format!("Via: SIP/2.0/UDP {};branch=z9hG4bKuas9", uas.addr),
            &format!("Route: {rr}"),
            "Max-Forwards: 70",
            "From: <sip:bob@example.com>;tag=b1",
            "To: <sip:alice@example.com>;tag=a1",
            "Call-ID: call-1",
            "CSeq: 1 BYE",
        ],
        "",
    );
    uas.send(proxy.udp, &bye).await;
    let bye_in = uac.recv().await;
    assert_eq!(bye_in.method().map(|m| m.as_str()), Some("BYE"));
    assert_eq!(bye_in.header("Record-Route"), None, "no RR in dialog");
    uac.send(proxy.udp, &answer(&bye_in, 200, "OK", &uac)).await;
    let bye_ok = uas.recv().await;
    assert_eq!(bye_ok.status(), Some(200));
    assert_eq!(bye_ok.headers("Via").count(), 1);
    proxy.task.abort();
}

#[tokio::test]
async fn cancel_is_answered_and_propagated_yielding_487() {
    let (uac, uas) = (Peer::new().await, Peer::new().await);
    let proxy = start(&default_route(&uas), Arc::new(NoFilters)).await;
    let ruri = format!("sip:bob@{}", proxy.udp);
    uac.send(proxy.udp, &invite(&uac, &ruri, "z9hG4bKc1", "call-c"))
        .await;
    assert_eq!(uac.recv().await.status(), Some(100));
    let forwarded = uas.recv().await;
    uas.send(proxy.udp, &answer(&forwarded, 180, "Ringing", &uas))
        .await;
    assert_eq!(uac.recv().await.status(), Some(180));

    let cancel = cancel_for(&uac, &ruri, "z9hG4bKc1", "call-c");
    uac.send(proxy.udp, &cancel).await;
    let cancel_ok = uac.recv().await;
    assert_eq!(cancel_ok.status(), Some(200));
    assert_eq!(
        cancel_ok.cseq().map(|(_, m)| m.as_str().to_owned()),
        Some("CANCEL".into())
    );

    let cancel_down = uas.recv().await;
    assert_eq!(cancel_down.method().map(|m| m.as_str()), Some("CANCEL"));
    assert_eq!(
        cancel_down
            .top_via()
            .and_then(|v| v.branch().map(str::to_owned)),
        forwarded
            .top_via()
            .and_then(|v| v.branch().map(str::to_owned)),
        "CANCEL shares the INVITE's branch"
    );
    uas.send(proxy.udp, &answer(&cancel_down, 200, "OK", &uas))
        .await;
    uas.send(
        proxy.udp,
        &answer(&forwarded, 487, "Request Terminated", &uas),
    )
    .await;
    let terminated = uac.recv().await;
    assert_eq!(terminated.status(), Some(487));
    let ack = uas.recv().await;
    assert_eq!(ack.method().map(|m| m.as_str()), Some("ACK"));
    assert_eq!(ack.cseq().map(|(n, _)| n), Some(1));
    proxy.task.abort();
}

fn top_branch(msg: &Message) -> Option<String> {
    msg.top_via().and_then(|v| v.branch().map(str::to_owned))
}

/// A CANCEL from `uac` for its INVITE on `branch`.
fn cancel_for(uac: &Peer, ruri: &str, branch: &str, call_id: &str) -> String {
    sip(
        &[
            &format!("CANCEL {ruri} SIP/2.0"),
            &format!("Via: SIP/2.0/UDP {};branch={branch};rport", uac.addr),
            "Max-Forwards: 70",
            "From: <sip:alice@example.com>;tag=a1",
            "To: <sip:bob@example.com>",
            &format!("Call-ID: {call_id}"),
            "CSeq: 1 CANCEL",
        ],
        "",
    )
}

#[tokio::test]
async fn cancel_without_transaction_is_forwarded_statelessly() {
    let (uac, uas) = (Peer::new().await, Peer::new().await);
    let proxy = start(&default_route(&uas), Arc::new(NoFilters)).await;
    let ruri = format!("sip:bob@{}", proxy.udp);
    let cancel = cancel_for(&uac, &ruri, "z9hG4bKlone1", "call-lone");
    uac.send(proxy.udp, &cancel).await;

    let first = uas.recv().await;
    assert_eq!(first.method().map(|m| m.as_str()), Some("CANCEL"));
    assert_eq!(first.request_uri(), Some(ruri.as_str()));
    assert_eq!(first.max_forwards(), Some(69));
    assert_eq!(first.header("Record-Route"), None);
    let vias: Vec<&str> = first.header_values("Via").collect();
    assert_eq!(vias.len(), 2, "{vias:?}");
    let ours = first.top_via().expect("top via");
    assert_eq!(ours.port, Some(proxy.udp.port()), "our Via on top");
    assert!(ours.has_rfc3261_branch());
    let uac_via = siphost_sip::Via::parse(vias[1]).expect("uac via");
    assert_eq!(uac_via.branch(), Some("z9hG4bKlone1"));
    assert_eq!(uac_via.rport(), Some(Some(uac.addr.port())));
    let branch = top_branch(&first).expect("our branch");
    assert_ne!(branch, "z9hG4bKlone1");
    // Stateless: nothing answers the CANCEL here (no 481, no 200 of our own).
    uac.recv_nothing(Duration::from_millis(200)).await;

    // §16.11: a retransmission leaves with the same branch; another CANCEL does not.
    uac.send(proxy.udp, &cancel).await;
    let again = uas.recv().await;
    assert_eq!(top_branch(&again).as_deref(), Some(branch.as_str()));
    uac.send(
        proxy.udp,
        &cancel_for(&uac, &ruri, "z9hG4bKlone2", "call-lone-2"),
    )
    .await;
    let other = uas.recv().await;
    assert_eq!(other.call_id(), Some("call-lone-2"));
    assert_ne!(top_branch(&other).as_deref(), Some(branch.as_str()));

    // §16.7 step 1: the 200 matches no client transaction; our Via comes off and it goes
    // to the caller by the next Via (its rport).
    uas.send(proxy.udp, &answer(&first, 200, "OK", &uas)).await;
    let ok = uac.recv().await;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        ok.cseq().map(|(_, m)| m.as_str().to_owned()),
        Some("CANCEL".into())
    );
    assert_eq!(ok.header_values("Via").count(), 1, "our Via stripped");
    assert_eq!(top_branch(&ok).as_deref(), Some("z9hG4bKlone1"));
    uas.recv_nothing(Duration::from_millis(50)).await;
    proxy.task.abort();
}

/// Reads SIP messages from a TCP stream (framed by Content-Length).
async fn read_tcp_message(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Message {
    loop {
        if let siphost_sip::Framing::Complete(n) = siphost_sip::frame_stream(buffer) {
            let frame: Vec<u8> = buffer.drain(..n).collect();
            return Message::parse(Bytes::from(frame)).expect("tcp message parses");
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("tcp data within the wait")
            .expect("tcp read");
        assert!(n > 0, "connection closed early");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn tcp_next_hop_connection_is_reused_and_closed_when_idle() {
    let uac = Peer::new().await;
    let uas = TcpListener::bind("127.0.0.1:0").await.expect("uas listen");
    let uas_addr = uas.local_addr().expect("uas addr");
    let tail = format!(
        "[proxy]\ndefault_route = \"sip:{uas_addr};transport=tcp\"\n[tcp]\nidle_timeout_ms = 300\n"
    );
    let proxy = start(&tail, Arc::new(NoFilters)).await;
    let message = |n: u32| {
        sip(
            &[
                &format!("MESSAGE sip:bob@{} SIP/2.0", proxy.udp),
                &format!("Via: SIP/2.0/UDP {};branch=z9hG4bKm{n}", uac.addr),
                "Max-Forwards: 70",
                "From: <sip:alice@example.com>;tag=a1",
                "To: <sip:bob@example.com>",
                &format!("Call-ID: msg-{n}"),
                &format!("CSeq: {n} MESSAGE"),
            ],
            "hi",
        )
    };
    uac.send(proxy.udp, &message(1)).await;
    let (mut stream, _) = tokio::time::timeout(WAIT, uas.accept())
        .await
        .expect("proxy connects")
        .expect("accept");
    let mut buffer = Vec::new();
    let first = read_tcp_message(&mut stream, &mut buffer).await;
    assert_eq!(first.call_id(), Some("msg-1"));
    let via = first.top_via().expect("via");
    assert_eq!(via.transport, "TCP");
    assert_eq!(
        via.port,
        Some(proxy.tcp.port()),
        "Via names our TCP listener"
    );
    stream
        .write_all(answer(&first, 200, "OK", &uac).as_bytes())
        .await
        .expect("reply");
    assert_eq!(uac.recv().await.status(), Some(200));

    uac.send(proxy.udp, &message(2)).await;
    let second = read_tcp_message(&mut stream, &mut buffer).await;
    assert_eq!(second.call_id(), Some("msg-2"), "same connection reused");
    assert!(
        tokio::time::timeout(Duration::from_millis(100), uas.accept())
            .await
            .is_err(),
        "no second connection"
    );
    stream
        .write_all(answer(&second, 200, "OK", &uac).as_bytes())
        .await
        .expect("reply");
    assert_eq!(uac.recv().await.status(), Some(200));

    // Idle: the proxy closes the connection.
    let mut rest = [0u8; 64];
    let n = tokio::time::timeout(WAIT, stream.read(&mut rest))
        .await
        .expect("closed within the wait")
        .expect("read");
    assert_eq!(n, 0, "idle connection closed by the proxy");
    proxy.task.abort();
}

#[tokio::test]
async fn tcp_request_is_answered_on_its_connection() {
    let uas = Peer::new().await;
    let proxy = start(&default_route(&uas), Arc::new(NoFilters)).await;
    let mut stream = TcpStream::connect(proxy.tcp).await.expect("connect");
    let local = stream.local_addr().expect("local");
    let mut buffer = Vec::new();
    // Calls on one connection land on different shards; each answers on the connection.
    for i in 0..8 {
        let text = sip(
            &[
                &format!("OPTIONS sip:bob@{} SIP/2.0", proxy.udp),
                // A sent-by port nobody listens on: the reply must use the connection.
                &format!("Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt{i}"),
                "Max-Forwards: 70",
                "From: <sip:alice@example.com>;tag=a1",
                "To: <sip:bob@example.com>",
                &format!("Call-ID: tcp-{i}"),
                "CSeq: 1 OPTIONS",
            ],
            "",
        );
        stream.write_all(text.as_bytes()).await.expect("send");
        let forwarded = uas.recv().await;
        let uac_via =
            siphost_sip::Via::parse(forwarded.headers("Via").nth(1).expect("2 vias")).expect("via");
        assert_eq!(uac_via.transport, "TCP");
        assert_ne!(local.port(), 9);
        uas.send(proxy.udp, &answer(&forwarded, 200, "OK", &uas))
            .await;
        let reply = read_tcp_message(&mut stream, &mut buffer).await;
        assert_eq!(reply.status(), Some(200));
        assert_eq!(reply.call_id(), Some(format!("tcp-{i}").as_str()));
    }
    let shards = proxy.handle.stats().shard_messages.get().expect("counters");
    let busy = shards
        .iter()
        .filter(|n| n.load(std::sync::atomic::Ordering::Relaxed) > 0)
        .count();
    assert!(busy > 1, "every call stayed on one shard");
    proxy.task.abort();
}

#[tokio::test]
async fn local_request_through_handle_returns_final_reply() {
    let uas = Peer::new().await;
    let proxy = start("", Arc::new(NoFilters)).await;
    let mut request = Message::request(
        siphost_sip::Method::Options,
        &format!("sip:bob@{}", uas.addr),
    );
    request.append_header("From", "<sip:host@example.com>;tag=h1");
    request.append_header("To", "<sip:bob@example.com>");
    request.append_header("Call-ID", "local-1");
    request.append_header("CSeq", "1 OPTIONS");
    let handle = proxy.handle.clone();
    let pending = tokio::spawn(async move {
        handle
            .send_request(request, crate::proxy::Origination::default())
            .await
    });
    let received = uas.recv().await;
    assert_eq!(received.max_forwards(), Some(70));
    assert!(received.top_via().is_some_and(|v| v.has_rfc3261_branch()));
    uas.send(proxy.udp, &answer(&received, 200, "OK", &uas))
        .await;
    let reply = tokio::time::timeout(WAIT, pending)
        .await
        .expect("reply in time")
        .expect("task")
        .expect("final reply");
    assert_eq!(reply.response.status(), Some(200));
    assert_eq!(reply.peer, uas.addr);
    proxy.task.abort();
}

/// Hooks that record where each call came from and resend the first failure elsewhere.
struct Recorder {
    calls: Mutex<Vec<(&'static str, SocketAddr, String)>>,
    resend_to: String,
}

impl FilterHooks for Recorder {
    fn applies(&self, _transport: &str, _local: SocketAddr) -> bool {
        true
    }

    fn submit(&self, call: HookCall, done: HookDone) -> Submitted {
        let result = match call {
            HookCall::Request { mut ctx, mut msg } => {
                msg.append_header("X-Filtered", "yes");
                if let Some(params) = ctx.record_route_params.as_mut() {
                    params.push_str(";vsf=abc");
                }
                self.push("request", &ctx);
                HookResult {
                    call: HookCall::Request { ctx, msg },
                    decision: Decision::Continue,
                }
            }
            HookCall::Reply { ctx, msg } => {
                self.push("reply", &ctx);
                HookResult {
                    call: HookCall::Reply { ctx, msg },
                    decision: Decision::Continue,
                }
            }
            HookCall::Failure {
                ctx,
                mut request,
                reply,
            } => {
                self.push("failure", &ctx);
                let first = self
                    .calls
                    .lock()
                    .map(|c| c.iter().filter(|(k, ..)| *k == "failure").count() == 1)
                    .unwrap_or(false);
                let decision = if first {
                    request.set_header("X-Retry", "1");
                    Decision::Resend {
                        next_hop: Some(self.resend_to.clone()),
                    }
                } else {
                    Decision::Continue
                };
                HookResult {
                    call: HookCall::Failure {
                        ctx,
                        request,
                        reply,
                    },
                    decision,
                }
            }
        };
        done(result);
        Submitted::Queued
    }
}

impl Recorder {
    fn push(&self, kind: &'static str, ctx: &HookContext) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.push((kind, ctx.local, ctx.transaction_key.clone()));
        }
    }
}

#[tokio::test]
async fn hooks_edit_requests_and_failure_resends_a_new_branch() {
    let (uac, uas1, uas2) = (Peer::new().await, Peer::new().await, Peer::new().await);
    let recorder = Arc::new(Recorder {
        calls: Mutex::new(Vec::new()),
        resend_to: format!("sip:{}", uas2.addr),
    });
    let proxy = start(&default_route(&uas1), recorder.clone()).await;
    let ruri = format!("sip:bob@{}", proxy.udp);
    uac.send(proxy.udp, &invite(&uac, &ruri, "z9hG4bKh1", "call-h"))
        .await;
    let first = uas1.recv().await;
    assert_eq!(first.header("X-Filtered"), Some("yes"));
    let rr = format!(
        "<sip:127.0.0.1:{};transport=udp;lr;vsf=abc>",
        proxy.udp.port()
    );
    assert_eq!(first.header("Record-Route"), Some(rr.as_str()));
    uas1.send(proxy.udp, &answer(&first, 486, "Busy Here", &uas1))
        .await;
    assert_eq!(uas1.recv().await.method().map(|m| m.as_str()), Some("ACK"));

    let second = uas2.recv().await;
    assert_eq!(second.header("X-Retry"), Some("1"));
    assert_eq!(second.max_forwards(), Some(69), "not decremented twice");
    assert_eq!(second.headers("Via").count(), 2, "old branch Via replaced");
    assert_eq!(second.headers("Record-Route").count(), 1);
    assert_ne!(
        second.top_via().and_then(|v| v.branch().map(str::to_owned)),
        first.top_via().and_then(|v| v.branch().map(str::to_owned))
    );
    uas2.send(proxy.udp, &answer(&second, 603, "Decline", &uas2))
        .await;
    let final_reply = uac.recv_skip_trying().await;
    assert_eq!(final_reply.status(), Some(603));

    let calls = recorder.calls.lock().expect("calls").clone();
    let kinds: Vec<&str> = calls.iter().map(|(k, ..)| *k).collect();
    assert_eq!(kinds, ["request", "reply", "failure", "reply", "failure"]);
    assert!(calls.iter().all(|(_, local, _)| *local == proxy.udp));
    assert!(calls.iter().all(|(.., key)| *key == calls[0].2));
    proxy.task.abort();
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_transactions() {
    let (uac, uas) = (Peer::new().await, Peer::new().await);
    let proxy = start(&default_route(&uas), Arc::new(NoFilters)).await;
    let ruri = format!("sip:bob@{}", proxy.udp);
    uac.send(proxy.udp, &invite(&uac, &ruri, "z9hG4bKs1", "call-s"))
        .await;
    assert_eq!(uac.recv().await.status(), Some(100));
    let forwarded = uas.recv().await;
    proxy.handle.shutdown(Duration::from_secs(5)).await;
    // New transactions are refused while draining.
    uac.send(proxy.udp, &invite(&uac, &ruri, "z9hG4bKs2", "call-s2"))
        .await;
    let mut statuses = Vec::new();
    statuses.push(uac.recv().await.status());
    uas.send(proxy.udp, &answer(&forwarded, 200, "OK", &uas))
        .await;
    statuses.push(uac.recv().await.status());
    statuses.sort();
    assert!(
        statuses.contains(&Some(503)) && statuses.contains(&Some(200)),
        "{statuses:?}"
    );
    tokio::time::timeout(WAIT, proxy.task)
        .await
        .expect("proxy stops once the call is answered")
        .expect("proxy task");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let uas = Peer::new().await;
    let tail = format!("{}[tcp]\nmax_connections = 1\n", default_route(&uas));
    let proxy = start(&tail, Arc::new(NoFilters)).await;
    let mut first = TcpStream::connect(proxy.tcp).await.expect("first connect");
    // Let the proxy account the first connection before the second arrives.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut second = TcpStream::connect(proxy.tcp).await.expect("second connect");
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(WAIT, second.read(&mut byte))
        .await
        .expect("second connection closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "second connection refused");
    // The first one still works: a keep-alive ping gets its pong.
    first.write_all(b"\r\n\r\n").await.expect("ping");
    let n = tokio::time::timeout(WAIT, first.read(&mut byte))
        .await
        .expect("pong in time")
        .expect("read");
    assert_eq!((n, byte[0]), (1, b'\r'));
    proxy.task.abort();
}

/// Hooks that hold every call of a dialog whose Call-ID starts with "held" until the test
/// releases it (from another thread, as a tenant worker would), refuse those starting with
/// "full" as overloaded, and have no filter for the rest.
struct Holding {
    calls: tokio::sync::mpsc::UnboundedSender<(HookCall, HookDone)>,
}

impl FilterHooks for Holding {
    fn applies(&self, _transport: &str, _local: SocketAddr) -> bool {
        true
    }

    fn submit(&self, call: HookCall, done: HookDone) -> Submitted {
        let key = call.ctx().dialog_key.clone().unwrap_or_default();
        if key.starts_with("full") {
            return Submitted::Overloaded(call);
        }
        if !key.starts_with("held") {
            return Submitted::NoFilter(call);
        }
        match self.calls.send((call, done)) {
            Ok(()) => Submitted::Queued,
            Err(returned) => Submitted::NoFilter(returned.0.0),
        }
    }
}

type HeldCalls = tokio::sync::mpsc::UnboundedReceiver<(HookCall, HookDone)>;

fn holding() -> (Arc<Holding>, HeldCalls) {
    let (calls, held) = tokio::sync::mpsc::unbounded_channel();
    (Arc::new(Holding { calls }), held)
}

async fn next_held(held: &mut HeldCalls) -> (HookCall, HookDone) {
    tokio::time::timeout(WAIT, held.recv())
        .await
        .expect("a held filter call within the wait")
        .expect("hooks alive")
}

/// Lets a held call go on with `decision`, from a thread of its own.
fn release(held: (HookCall, HookDone), decision: Decision) {
    let (call, done) = held;
    std::thread::spawn(move || done(HookResult { call, decision }))
        .join()
        .expect("release thread");
}

/// Waits until the proxy has received `count` responses in all.
async fn responses_seen(handle: &ProxyHandle, count: u64) {
    let seen = || {
        handle
            .stats()
            .responses
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "responses seen: {}",
            seen()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_parked_call_holds_up_no_other_and_its_replies_keep_their_order() {
    let (uac, uas) = (Peer::new().await, Peer::new().await);
    let (hooks, mut held) = holding();
    let proxy = start(&default_route(&uas), hooks).await;
    let ruri = format!("sip:bob@{}", proxy.udp);
    uac.send(proxy.udp, &invite(&uac, &ruri, "z9hG4bKo1", "held-o1"))
        .await;
    assert_eq!(uac.recv().await.status(), Some(100));
    let parked = next_held(&mut held).await;

    // Another call goes all the way while the first waits for its filters.
    uac.send(proxy.udp, &invite(&uac, &ruri, "z9hG4bKo2", "free-o2"))
        .await;
    assert_eq!(uac.recv().await.status(), Some(100));
    let free = uas.recv().await;
    assert_eq!(free.call_id(), Some("free-o2"));
    uas.send(proxy.udp, &answer(&free, 200, "OK", &uas)).await;
    let answered = uac.recv().await;
    assert_eq!(
        (answered.status(), answered.call_id()),
        (Some(200), Some("free-o2"))
    );

    release(parked, Decision::Continue);
    let forwarded = uas.recv().await;
    assert_eq!(forwarded.call_id(), Some("held-o1"));
    uas.send(proxy.udp, &answer(&forwarded, 180, "Ringing", &uas))
        .await;
    uas.send(proxy.udp, &answer(&forwarded, 200, "OK", &uas))
        .await;
    responses_seen(&proxy.handle, 3).await;
    let ringing = next_held(&mut held).await;
    assert!(
        matches!(&ringing.0, HookCall::Reply { msg, .. } if msg.status() == Some(180)),
        "{:?}",
        ringing.0
    );
    assert!(
        held.try_recv().is_err(),
        "the 200 waits until the 180 is decided"
    );
    release(ringing, Decision::Continue);
    let ok = next_held(&mut held).await;
    assert!(matches!(&ok.0, HookCall::Reply { msg, .. } if msg.status() == Some(200)));
    release(ok, Decision::Continue);
    assert_eq!(uac.recv().await.status(), Some(180));
    assert_eq!(uac.recv().await.status(), Some(200));
    proxy.task.abort();
}

#[tokio::test]
async fn shutdown_waits_for_a_parked_request() {
    let (uac, uas) = (Peer::new().await, Peer::new().await);
    let (hooks, mut held) = holding();
    let proxy = start(&default_route(&uas), hooks).await;
    let ruri = format!("sip:bob@{}", proxy.udp);
    uac.send(proxy.udp, &invite(&uac, &ruri, "z9hG4bKd1", "held-d1"))
        .await;
    assert_eq!(uac.recv().await.status(), Some(100));
    let parked = next_held(&mut held).await;
    proxy.handle.shutdown(Duration::from_secs(5)).await;
    release(parked, Decision::Continue);
    let forwarded = uas.recv().await;
    uas.send(proxy.udp, &answer(&forwarded, 486, "Busy Here", &uas))
        .await;
    // The reply and failure hooks of the call run while draining.
    release(next_held(&mut held).await, Decision::Continue);
    release(next_held(&mut held).await, Decision::Continue);
    assert_eq!(uac.recv().await.status(), Some(486));
    tokio::time::timeout(WAIT, proxy.task)
        .await
        .expect("proxy stops once the call is answered")
        .expect("proxy task");
}

#[tokio::test]
async fn a_tcp_peer_that_stops_reading_is_dropped_at_the_write_queue_limit() {
    let uac = Peer::new().await;
    // The callee accepts over TCP with a tiny receive window and never reads.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let callee = socket.listen(16).expect("listen");
    let callee_addr = callee.local_addr().expect("callee addr");
    let tail = format!(
        "[proxy]\ndefault_route = \"sip:{callee_addr};transport=tcp\"\n[tcp]\nwrite_queue = 4\n"
    );
    let proxy = start(&tail, Arc::new(NoFilters)).await;
    let ruri = format!("sip:bob@{}", proxy.udp);
    let body = "a=x\r\n".repeat(4000);
    let accept = tokio::spawn(async move { callee.accept().await.expect("accept").0 });
    let stats = proxy.handle.stats();
    let dropped = || {
        stats
            .slow_peers_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    for n in 0..400 {
        let mut request = invite(&uac, &ruri, &format!("z9hG4bKw{n}"), &format!("call-w{n}"));
        request = request.replace("Content-Length: 5\r\n\r\nv=0\r\n", "");
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        uac.send(proxy.udp, &request).await;
        if dropped() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while dropped() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "peer never dropped");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The proxy closed the connection: reading it now ends.
    let mut stream = accept.await.expect("accepted");
    let mut sink = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "connection closed by the proxy");
    proxy.task.abort();
}
