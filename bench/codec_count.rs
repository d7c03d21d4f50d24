//! Instructions per parse, for callgrind: parses the typical INVITE `N` times (first
//! argument) and reads the fields a proxy needs, as the criterion `parse+read` bench does;
//! with `rsip` as second argument, rsip parses it instead. `bench/codec-instructions.sh`
//! runs it under callgrind and prints the difference per parse, a count that does not
//! depend on how busy the machine is.

use siphost_sip::Bytes;

#[path = "codec_work.rs"]
mod codec_work;
use codec_work::{INVITE, parse_and_read, rsip_parse};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let buf = Bytes::from_static(INVITE);
    let work = match std::env::args().nth(2).as_deref() {
        Some("rsip") => rsip_parse,
        _ => parse_and_read,
    };
    for _ in 0..n {
        work(&buf);
    }
}
