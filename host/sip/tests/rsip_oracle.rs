//! Differential test against rsip 0.4: wherever rsip parses a message (torture corpus plus
//! generated requests and responses), the fields both codecs expose must agree.

use rsip::headers::ToTypedHeader;
use rsip::headers::UntypedHeader;
use rsip::message::HeadersExt;
use siphost_sip::{Bytes, Message};

fn norm(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Compares every field rsip yields with ours; returns how many fields were compared.
fn compare(name: &str, raw: &Bytes) -> usize {
    let Ok(theirs) = rsip::SipMessage::try_from(raw.clone()) else {
        return 0;
    };
    let Ok(ours) = Message::parse(raw.clone()) else {
        return 0;
    };
    let mut compared = 0;
    let mut check = |field: &str, a: Option<String>, b: Option<String>| {
        assert_eq!(a, b, "{name}: {field} (ours, rsip)");
        compared += 1;
    };
    check(
        "is_request",
        Some(ours.is_request().to_string()),
        Some(theirs.is_request().to_string()),
    );
    match &theirs {
        rsip::SipMessage::Request(r) => {
            check(
                "method",
                ours.method().map(|m| m.to_string()),
                Some(r.method().to_string()),
            );
        }
        rsip::SipMessage::Response(r) => {
            check(
                "status",
                ours.status().map(|s| s.to_string()),
                Some(r.status_code().code().to_string()),
            );
        }
    }
    if let Ok(h) = theirs.call_id_header() {
        check("Call-ID", ours.call_id().map(norm), Some(norm(h.value())));
    }
    if let Ok(c) = theirs.cseq_header().and_then(|h| h.typed()) {
        check(
            "CSeq",
            ours.cseq().map(|(n, m)| format!("{n} {m}")),
            Some(format!("{} {}", c.seq, c.method)),
        );
    }
    if let Ok(f) = theirs.from_header().and_then(|h| h.typed()) {
        check(
            "From tag",
            ours.from_tag().map(str::to_owned),
            f.tag().map(|t| t.to_string()),
        );
    }
    if let Ok(t) = theirs.to_header().and_then(|h| h.typed()) {
        check(
            "To tag",
            ours.to_tag().map(str::to_owned),
            t.tag().map(|t| t.to_string()),
        );
    }
    if let Ok(v) = theirs.via_header().and_then(|h| h.typed()) {
        let top = ours.top_via().expect("we have a Via");
        check(
            "Via branch",
            top.branch().map(str::to_owned),
            v.branch().map(|b| b.to_string()),
        );
        check(
            "Via transport",
            Some(top.transport.to_ascii_uppercase()),
            Some(v.transport.to_string().to_ascii_uppercase()),
        );
    }
    if let Ok(mf) = theirs.max_forwards_header() {
        check(
            "Max-Forwards",
            ours.max_forwards().map(|n| n.to_string()),
            mf.value().trim().parse::<u32>().ok().map(|n| n.to_string()),
        );
    }
    // rsip takes the rest of the buffer as body; compare where Content-Length covers it.
    let rest_is_body = raw.ends_with(ours.body()) && ours.to_bytes().len() == raw.len();
    if rest_is_body {
        check(
            "body",
            Some(format!("{:?}", ours.body())),
            Some(format!("{:?}", theirs.body().as_slice())),
        );
    }
    compared
}

fn generated() -> Vec<(String, Bytes)> {
    let body = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let mut out = Vec::new();
    let methods = [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "REGISTER",
        "OPTIONS",
        "INFO",
        "UPDATE",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "REFER",
        "MESSAGE",
        "PUBLISH",
    ];
    for (i, method) in methods.iter().enumerate() {
        let (via, from, to, call) = if i % 2 == 0 {
            ("Via", "From", "To", "Call-ID")
        } else {
            ("v", "f", "t", "i")
        };
        let transport = ["UDP", "TCP", "TLS"][i % 3];
        let with_body = i % 3 == 0;
        let b = if with_body { body } else { "" };
        let raw = format!(
            "{method} sip:user{i}@example.com;transport=udp SIP/2.0\r\n{via}: SIP/2.0/{transport} 192.0.2.{i}:5060;branch=z9hG4bK{i}abc;rport\r\nMax-Forwards: {mf}\r\n{from}: \"User {i}\" <sip:caller{i}@example.net>;tag=ft{i}\r\n{to}: <sip:user{i}@example.com>{to_tag}\r\n{call}: call{i}@192.0.2.{i}\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller{i}@192.0.2.{i}:5060>\r\nContent-Length: {len}\r\n\r\n{b}",
            mf = 70 - i,
            to_tag = if i % 4 == 1 {
                format!(";tag=tt{i}")
            } else {
                String::new()
            },
            cseq = 100 + i,
            len = b.len(),
        );
        out.push((format!("request {method}"), Bytes::from(raw)));
    }
    for (i, (code, reason)) in [
        (100, "Trying"),
        (180, "Ringing"),
        (200, "OK"),
        (302, "Moved Temporarily"),
        (407, "Proxy Authentication Required"),
        (486, "Busy Here"),
        (503, "Service Unavailable"),
        (603, "Decline"),
    ]
    .iter()
    .enumerate()
    {
        let raw = format!(
            "SIP/2.0 {code} {reason}\r\nVia: SIP/2.0/UDP 192.0.2.{i};branch=z9hG4bKr{i};received=198.51.100.{i};rport=5060\r\nVia: SIP/2.0/UDP 192.0.2.200;branch=z9hG4bKsecond\r\nFrom: <sip:a@example.com>;tag=f{i}\r\nTo: <sip:b@example.com>;tag=t{i}\r\nCall-ID: resp{i}@example.com\r\nCSeq: {i} INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        out.push((format!("response {code}"), Bytes::from(raw)));
    }
    out.push((
        "sample INVITE".into(),
        Bytes::from_static(include_bytes!("data/invite.sip")),
    ));
    out
}

#[test]
fn generated_messages_agree_with_rsip() {
    let mut compared = 0;
    let mut parsed_by_rsip = 0;
    for (name, raw) in generated() {
        Message::parse(raw.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        if rsip::SipMessage::try_from(raw.clone()).is_ok() {
            parsed_by_rsip += 1;
        }
        compared += compare(&name, &raw);
    }
    assert_eq!(
        parsed_by_rsip,
        generated().len(),
        "rsip parses every generated message"
    );
    assert!(
        compared >= generated().len() * 8,
        "compared {compared} fields"
    );
}

#[test]
fn torture_corpus_agrees_with_rsip_where_it_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
    let mut compared = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let raw = Bytes::from(std::fs::read(&path).unwrap());
        compared += compare(&path.display().to_string(), &raw);
    }
    assert!(compared > 0, "rsip parsed none of the corpus");
    println!("compared {compared} fields on the torture corpus");
}
