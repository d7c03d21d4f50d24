//! The work both codec benches measure, so the criterion timing and the callgrind count
//! describe the same thing: the typical INVITE, and what a proxy reads from it.

use std::hint::black_box;

use siphost_sip::{Bytes, Message};

/// A typical ~800-byte INVITE with an SDP body.
pub const INVITE: &[u8] = include_bytes!("../host/sip/tests/data/invite.sip");

/// Parses `buf` and reads the top Via (branch, host), the tags, CSeq and Call-ID.
pub fn parse_and_read(buf: &Bytes) {
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

/// rsip's parse of the same bytes.
pub fn rsip_parse(buf: &Bytes) {
    let m = rsip::SipMessage::try_from(black_box(buf.clone())).expect("rsip parses it");
    black_box(m);
}
