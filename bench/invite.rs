//! The realistic SIP message the benchmarks run filters on, and the hook call they
//! make with it, as the proxy makes it.

use std::net::SocketAddr;

use siphost::proxy::hooks::{FilterHooks, HookCall, HookContext, call_and_wait};
use siphost::sip::Message;

/// An INVITE as a softphone sends it: several Vias, Record-Route, Supported,
/// Allow, User-Agent and an SDP offer.
pub const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK776asdhds;rport\r\n\
Via: SIP/2.0/UDP 10.0.0.7:5060;received=10.0.0.7;branch=z9hG4bKnashds8\r\n\
Record-Route: <sip:10.0.0.7;lr;ftag=a1b2c3>\r\n\
Max-Forwards: 69\r\n\
From: \"Alice Liddell\" <sip:alice@example.com>;tag=1928301774\r\n\
To: <sip:bob@example.com>\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@10.0.0.7:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO\r\n\
Supported: replaces, timer, 100rel\r\n\
User-Agent: bench-phone/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 149\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 10.0.0.7\r\n\
s=-\r\n\
c=IN IP4 10.0.0.7\r\n\
t=0 0\r\n\
m=audio 49170 RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

/// The context of an initial INVITE arriving on 127.0.0.1:`port`.
fn ctx(port: u16) -> HookContext {
    HookContext {
        transport: "udp",
        source: "127.0.0.1:5999".parse().expect("addr"),
        local: SocketAddr::from(([127, 0, 0, 1], port)),
        next_hop: Some("sip:127.0.0.1:5090;transport=udp".into()),
        dialog_key: Some("a84b4c76e66710@pc33.example.com".into()),
        transaction_key: "z9hG4bK776asdhds".into(),
        record_route_params: Some(String::new()),
        own_route: None,
        endpoint: None,
    }
}

/// One `on-request` as the proxy makes it: the message and context move into
/// the call, the tenant's worker runs the chain, the edited message comes back.
pub fn hook(hooks: &dyn FilterHooks, msg: Message, port: u16) -> Message {
    let call = HookCall::Request {
        ctx: ctx(port),
        msg,
    };
    match call_and_wait(hooks, call) {
        Some(result) => match result.call {
            HookCall::Request { msg, .. } => msg,
            _ => unreachable!("a request call comes back as one"),
        },
        None => panic!("the filters dropped the call"),
    }
}
