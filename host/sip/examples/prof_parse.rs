use std::hint::black_box;
use siphost_sip::{Bytes, Message};
const INVITE: &[u8] = include_bytes!("../tests/data/invite.sip");
fn main() {
    let n: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10000);
    let buf = Bytes::from_static(INVITE);
    for _ in 0..n {
        let m = Message::parse(black_box(buf.clone())).expect("valid");
        let via = m.top_via().expect("Via");
        black_box((via.branch(), via.host, m.from_tag(), m.to_tag(), m.cseq(), m.call_id()));
    }
}
