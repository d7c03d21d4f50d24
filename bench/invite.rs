//! The realistic SIP message the benchmarks run filters on.

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
