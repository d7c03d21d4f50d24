//! Instructions per parse, for callgrind: parses the typical INVITE `N` times (first
//! argument) and reads the fields a proxy needs, as the criterion `parse+read` bench does;
//! with `rsip` as second argument, rsip parses it instead. `bench/codec-instructions.sh`
//! runs it under callgrind and prints the difference per parse, a count that does not
//! depend on how busy the machine is.

use std::hint::black_box;

use siphost_sip::{Bytes, Message};

const INVITE: &[u8] = include_bytes!("../host/sip/tests/data/invite.sip");

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let buf = Bytes::from_static(INVITE);
    if std::env::args().nth(2).as_deref() == Some("rsip") {
        for _ in 0..n {
            let m = rsip::SipMessage::try_from(black_box(buf.clone())).expect("rsip parses it");
            black_box(m);
        }
        return;
    }
    for _ in 0..n {
        let m = Message::parse(black_box(buf.clone())).expect("valid INVITE");
        let via = m.top_via().expect("Via");
        black_box((
            via.branch(),
            via.host,
            m.from_tag(),
            m.to_tag(),
            m.cseq(),
            m.call_id(),
        ));
    }
}
