//! Codec cost in two forms criterion cannot give on a noisy machine:
//!
//! - `codec_count N [rsip]`: parses the typical INVITE `N` times (as the criterion
//!   `parse+read` bench does), or has rsip parse it. `bench/codec-instructions.sh` runs this
//!   under callgrind and prints instructions per parse, a count that does not depend on how
//!   busy the machine is.
//! - `codec_count ab ROUNDS`: times batches of ours and rsip's parse alternately (A B B A ...)
//!   so both see the same machine, and prints a markdown table: the median batch of each
//!   first (the headline figure), then the fastest batch (what the code costs when nothing
//!   else runs).

use std::time::Instant;

use siphost_sip::Bytes;

#[path = "codec_work.rs"]
mod codec_work;
use codec_work::{INVITE, parse_and_read, rsip_parse};

const BATCH: u32 = 2000;

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next().unwrap_or_default();
    let buf = Bytes::from_static(INVITE);
    if first == "ab" {
        let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
        return alternate(&buf, rounds);
    }
    let n: usize = first.parse().unwrap_or(1);
    let work = match args.next().as_deref() {
        Some("rsip") => rsip_parse,
        _ => parse_and_read,
    };
    for _ in 0..n {
        work(&buf);
    }
}

fn batch_ns(buf: &Bytes, work: fn(&Bytes)) -> f64 {
    let start = Instant::now();
    for _ in 0..BATCH {
        work(buf);
    }
    start.elapsed().as_nanos() as f64 / f64::from(BATCH)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

fn alternate(buf: &Bytes, rounds: usize) {
    assert!(rounds > 0, "ab needs at least one round");
    let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        // Swap the order every round so neither side always runs first.
        let (a, b) = if round % 2 == 0 {
            let a = batch_ns(buf, parse_and_read);
            (a, batch_ns(buf, rsip_parse))
        } else {
            let b = batch_ns(buf, rsip_parse);
            (batch_ns(buf, parse_and_read), b)
        };
        ours.push(a);
        theirs.push(b);
        ratios.push(b / a);
    }
    let fastest = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    let (fo, ft) = (fastest(&ours), fastest(&theirs));
    // The median of the per-round ratios: each round's pair saw the same machine.
    let (mo, mt, mr) = (median(&mut ours), median(&mut theirs), median(&mut ratios));
    println!("| measure ({rounds} rounds of {BATCH}) | median batch | fastest batch |");
    println!("| --- | --- | --- |");
    println!("| siphost-sip ns/parse | {mo:.0} | {fo:.0} |");
    println!(
        "| siphost-sip parses/s | {:.0} | {:.0} |",
        1e9 / mo,
        1e9 / fo
    );
    println!("| rsip ns/parse | {mt:.0} | {ft:.0} |");
    println!("| rsip parses/s | {:.0} | {:.0} |", 1e9 / mt, 1e9 / ft);
    println!("| rsip / siphost-sip | {mr:.2} | {:.2} |", ft / fo);
}
