//! Codec throughput: parse a typical ~800-byte INVITE and read the fields a proxy needs,
//! parse + edit + serialize as a proxy does, and rsip's parse of the same bytes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use siphost_sip::{Bytes, Message};

#[path = "codec_work.rs"]
mod codec_work;
use codec_work::{INVITE, parse_and_read, rsip_parse};

fn codec(c: &mut Criterion) {
    let buf = Bytes::from_static(INVITE);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse+read", |b| b.iter(|| parse_and_read(&buf)));
    g.bench_function("parse+edit+serialize", |b| {
        let mut out = Vec::with_capacity(2048);
        b.iter(|| {
            let mut m = Message::parse(black_box(buf.clone())).expect("valid INVITE");
            m.set_top_via_param("received", Some("198.51.100.7"));
            m.set_top_via_param("rport", Some("5062"));
            let mf = m.max_forwards().unwrap_or(70).saturating_sub(1).to_string();
            m.set_header("Max-Forwards", &mf);
            m.prepend_header("Record-Route", "<sip:proxy.example.net;lr>");
            m.prepend_header("Via", "SIP/2.0/UDP proxy.example.net;branch=z9hG4bKproxy1");
            out.clear();
            m.write_to(&mut out);
            black_box(&out);
        })
    });
    g.bench_function("rsip parse", |b| b.iter(|| rsip_parse(&buf)));
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
