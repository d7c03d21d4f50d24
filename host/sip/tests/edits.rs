//! Edits, serialization, responses and header lookup on concrete messages: what a proxy
//! does to a request must come out byte-exact where untouched and correct where edited.

use siphost_sip::{Bytes, ErrorKind, Framing, Message, Method, NameAddr, frame_stream};

const INVITE: &[u8] = include_bytes!("data/invite.sip");

fn invite() -> Message {
    Message::parse(Bytes::from_static(INVITE)).unwrap()
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

#[test]
fn unedited_message_is_returned_without_copying() {
    let buf = Bytes::from_static(INVITE);
    let m = Message::parse(buf.clone()).unwrap();
    let out = m.to_bytes();
    assert_eq!(out, buf);
    assert_eq!(out.as_ptr(), buf.as_ptr(), "zero-copy");
}

#[test]
fn proxy_edits_touch_only_edited_lines() {
    let mut m = invite();
    m.prepend_header("Record-Route", "<sip:proxy.example.net;lr>");
    m.prepend_header("Via", "SIP/2.0/UDP proxy.example.net;branch=z9hG4bKproxy1");
    m.set_header("Max-Forwards", "69");
    let out = m.to_bytes();
    let s = text(&out);
    assert!(s.starts_with(
        "INVITE sip:bob@biloxi.example.com SIP/2.0\r\nVia: SIP/2.0/UDP proxy.example.net;branch=z9hG4bKproxy1\r\nRecord-Route: <sip:proxy.example.net;lr>\r\nVia: SIP/2.0/UDP pc33"
    ));
    assert!(
        s.contains("\r\nMax-Forwards: 69\r\nTo: Bob <sip:bob@biloxi.example.com>\r\n"),
        "replaced in place"
    );
    // Every original line except Max-Forwards is present byte for byte.
    for line in text(INVITE)
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with("Max-Forwards"))
    {
        assert!(s.contains(line), "{line}");
    }
    let again = Message::parse(out).unwrap();
    assert_eq!(again.max_forwards(), Some(69));
    assert_eq!(again.top_via().unwrap().branch(), Some("z9hG4bKproxy1"));
    assert_eq!(again.header_values("Via").count(), 2);
    assert_eq!(
        again.header_values("Record-Route").collect::<Vec<_>>(),
        ["<sip:proxy.example.net;lr>", "<sip:p1.example.com;lr>"]
    );
    assert_eq!(again.body(), invite().body());
}

/// A formatted value is written into the message's own text and comes out as the same
/// value passed as a string would, cleaned the same way when it needs cleaning.
#[test]
fn formatted_prepend_matches_the_string_form() {
    let (host, branch) = ("proxy.example.net", "z9hG4bKproxy1");
    let mut by_fmt = invite();
    by_fmt.prepend_header_fmt("Via", format_args!("SIP/2.0/UDP {host};branch={branch}"));
    let mut by_str = invite();
    by_str.prepend_header("Via", &format!("SIP/2.0/UDP {host};branch={branch}"));
    assert_eq!(by_fmt.to_bytes(), by_str.to_bytes());
    assert_eq!(by_fmt.top_via().unwrap().branch(), Some(branch));

    // CR/LF cannot inject a line, surrounding whitespace is trimmed, a name is cleaned.
    let evil = "x\r\nInjected: yes";
    let mut by_fmt = invite();
    by_fmt.prepend_header_fmt("X-Note", format_args!("  {evil} "));
    by_fmt.prepend_header_fmt("Bad Name:", format_args!("ignored"));
    let mut by_str = invite();
    by_str.prepend_header("X-Note", &format!("  {evil} "));
    by_str.prepend_header("Bad Name:", "ignored");
    let out = by_fmt.to_bytes();
    assert_eq!(out, by_str.to_bytes());
    let again = Message::parse(out).unwrap();
    assert_eq!(again.header("X-Note"), Some("x  Injected: yes"));
    assert_eq!(again.header("Injected"), None);
}

#[test]
fn top_via_params_received_and_rport() {
    let mut m = invite();
    assert_eq!(m.top_via().unwrap().rport(), Some(None));
    m.set_top_via_param("received", Some("198.51.100.7"));
    m.set_top_via_param("rport", Some("5062"));
    let via = m.top_via().unwrap();
    assert_eq!(via.received(), Some("198.51.100.7"));
    assert_eq!(via.rport(), Some(Some(5062)));
    assert_eq!(
        m.header("Via"),
        Some(
            "SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport=5062;received=198.51.100.7"
        )
    );
    Message::parse(m.to_bytes()).unwrap();
}

#[test]
fn remove_first_value_pops_combined_and_separate_lines() {
    let raw = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP p1;branch=z9hG4bK1 , SIP/2.0/UDP p2;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP p3;branch=z9hG4bK3\r\nRoute: <sip:r1;lr>, <sip:r2;lr>\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let mut m = Message::parse(Bytes::from(raw)).unwrap();
    assert_eq!(
        m.remove_first_value("Via").as_deref(),
        Some("SIP/2.0/UDP p1;branch=z9hG4bK1")
    );
    assert_eq!(
        m.headers("Via").collect::<Vec<_>>(),
        [
            "SIP/2.0/UDP p2;branch=z9hG4bK2",
            "SIP/2.0/UDP p3;branch=z9hG4bK3"
        ]
    );
    assert_eq!(
        m.remove_first_value("v").as_deref(),
        Some("SIP/2.0/UDP p2;branch=z9hG4bK2")
    );
    assert_eq!(m.headers("Via").count(), 1, "emptied line removed");
    assert_eq!(
        m.remove_first_value("Route").as_deref(),
        Some("<sip:r1;lr>")
    );
    assert_eq!(
        m.remove_first_value("Route").as_deref(),
        Some("<sip:r2;lr>")
    );
    assert_eq!(m.remove_first_value("Route"), None);
    assert_eq!(m.header("Route"), None);
    let out = m.to_bytes();
    assert!(text(&out).contains("Via: SIP/2.0/UDP p3;branch=z9hG4bK3\r\n"));
    assert_eq!(Message::parse(out).unwrap().top_via().unwrap().host, "p3");
}

#[test]
fn record_route_param_goes_after_the_angle_bracket() {
    let mut m = invite();
    assert!(m.set_first_value_param("Record-Route", "vsf", Some("AAEC")));
    assert_eq!(
        m.header("Record-Route"),
        Some("<sip:p1.example.com;lr>;vsf=AAEC")
    );
    assert!(m.set_first_value_param("Record-Route", "vsf", Some("BBBB")));
    assert_eq!(
        m.header("Record-Route"),
        Some("<sip:p1.example.com;lr>;vsf=BBBB"),
        "replaced, not duplicated"
    );
    assert!(
        !m.set_first_value_param("Route", "x", None),
        "no Route header"
    );
    let na = NameAddr::parse(m.header("Record-Route").unwrap()).unwrap();
    assert_eq!(na.param("vsf"), Some(Some("BBBB")));
}

#[test]
fn set_header_replaces_all_lines_and_compact_forms() {
    let raw = "OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\nt: <sip:a@b>\r\ni: x\r\nCSeq: 1 OPTIONS\r\nm: <sip:c1@h>\r\nContact: <sip:c2@h>\r\nl: 0\r\n\r\n";
    let mut m = Message::parse(Bytes::from(raw)).unwrap();
    assert_eq!(m.call_id(), Some("x"));
    assert_eq!(m.header("CALL-ID"), Some("x"));
    assert_eq!(m.header_values("contact").count(), 2);
    m.set_header("Contact", "<sip:only@h>");
    assert_eq!(m.headers("m").collect::<Vec<_>>(), ["<sip:only@h>"]);
    assert_eq!(m.remove_header("Contact"), 1);
    assert_eq!(m.remove_header("Contact"), 0);
    m.set_header("X-New", "1");
    assert_eq!(m.all_headers().last(), Some(("X-New", "1")));
    let names: Vec<&str> = m.all_headers().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["v", "f", "t", "i", "CSeq", "l", "X-New"],
        "names as written"
    );
}

#[test]
fn request_uri_and_body_edits() {
    let mut m = invite();
    m.set_request_uri("sip:bob@192.0.2.4:5060");
    m.set_body(Bytes::from_static(b"hello"), Some("text/plain"));
    let out = m.to_bytes();
    let again = Message::parse(out.clone()).unwrap();
    assert_eq!(again.request_uri(), Some("sip:bob@192.0.2.4:5060"));
    assert_eq!(again.body(), b"hello");
    assert_eq!(again.header("Content-Length"), Some("5"));
    assert_eq!(again.header("Content-Type"), Some("text/plain"));
    assert_eq!(text(&out).matches("Content-Length").count(), 1);
    m.set_body(Bytes::new(), None);
    let again = Message::parse(m.to_bytes()).unwrap();
    assert_eq!(
        (again.body().len(), again.header("Content-Type")),
        (0, None)
    );
}

#[test]
fn edits_cannot_inject_lines() {
    let mut m = invite();
    m.append_header("X-Evil", "a\r\nVia: SIP/2.0/UDP evil;branch=z9hG4bKevil");
    m.append_header("Bad Name:\r\n", "v");
    m.set_request_uri("sip:carol@example.com\r\nX-Injected: 1");
    let again = Message::parse(m.to_bytes()).unwrap();
    assert_eq!(again.header_values("Via").count(), 1);
    assert_eq!(again.header("BadName"), Some("v"));
    assert_eq!(
        again.request_uri(),
        Some("sip:carol@example.comX-Injected:1")
    );
    assert_eq!(again.header("X-Injected"), None);
}

#[test]
fn response_copies_the_dialog_headers() {
    let m = invite();
    let r = m.response(180, "Ringing", Some("as7d9"));
    let r = Message::parse(r.to_bytes()).unwrap();
    assert_eq!((r.status(), r.reason()), (Some(180), Some("Ringing")));
    assert_eq!(r.to_tag(), Some("as7d9"));
    assert_eq!(r.from_tag(), m.from_tag());
    assert_eq!(r.call_id(), m.call_id());
    assert_eq!(r.cseq(), Some((314159, Method::Invite)));
    assert_eq!(
        r.headers("Via").collect::<Vec<_>>(),
        m.headers("Via").collect::<Vec<_>>()
    );
    assert_eq!(r.header("Content-Length"), Some("0"));
    assert_eq!(r.header("Contact"), None);
    // An existing To tag is kept.
    let r2 = r.response(200, "OK", Some("other"));
    assert_eq!(r2.to_tag(), Some("as7d9"));
}

#[test]
fn new_request_is_built_with_edits() {
    let mut m = Message::request(Method::Options, "sip:carol@chicago.example.com");
    m.append_header("Via", "SIP/2.0/UDP host;branch=z9hG4bKnew");
    m.append_header("From", "<sip:a@b>;tag=1");
    m.append_header("To", "<sip:carol@chicago.example.com>");
    m.append_header("Call-ID", "new-1");
    m.append_header("CSeq", "1 OPTIONS");
    m.append_header("Max-Forwards", "70");
    let again = Message::parse(m.to_bytes()).unwrap();
    assert_eq!(again.method(), Some(&Method::Options));
    assert_eq!(again.header("Content-Length"), Some("0"));
    assert_eq!(again.cseq(), Some((1, Method::Options)));
}

#[test]
fn bare_lf_lines_and_leading_crlf_are_accepted() {
    let raw = "\r\n\r\nOPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nFrom: <sip:a@b>;tag=1\nTo: <sip:a@b>\nCall-ID: x\nCSeq: 1 OPTIONS\nContent-Length: 2\n\nhi";
    let m = Message::parse(Bytes::from(raw)).unwrap();
    assert_eq!(m.body(), b"hi");
    assert_eq!(m.to_bytes(), Bytes::from(&raw[4..]));
}

#[test]
fn content_length_framing_on_datagrams() {
    let base = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n";
    let short =
        Message::parse(Bytes::from(format!("{base}Content-Length: 2\r\n\r\nhello"))).unwrap();
    assert_eq!(short.body(), b"he", "extra bytes dropped");
    let err =
        Message::parse(Bytes::from(format!("{base}Content-Length: 9\r\n\r\nhello"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ContentLength);
    assert!(err.to_string().contains("Content-Length 9"), "{err}");
    let none = Message::parse(Bytes::from(format!("{base}\r\nhello"))).unwrap();
    assert_eq!(none.body(), b"hello", "no Content-Length: rest of datagram");
}

#[test]
fn stream_framing_agrees_with_parse_on_the_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
    let mut framed = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let raw = Bytes::from(std::fs::read(entry.unwrap().path()).unwrap());
        let Ok(m) = Message::parse(raw.clone()) else {
            continue;
        };
        let wire = m.to_bytes();
        let mut stream = b"\r\n\r\n".to_vec();
        stream.extend_from_slice(&wire);
        stream.extend_from_slice(&wire[..wire.len() / 2]);
        assert_eq!(
            frame_stream(&stream),
            Framing::Complete(4),
            "keep-alive first"
        );
        assert_eq!(frame_stream(&stream[4..]), Framing::Complete(wire.len()));
        assert_eq!(frame_stream(&stream[4 + wire.len()..]), Framing::Incomplete);
        framed += 1;
    }
    assert_eq!(framed, 28, "every accepted torture message frames");
}

#[test]
fn errors_say_what_and_where() {
    let err = Message::parse(Bytes::from_static(
        b"INVITE sip:a@b SIP/2.0\r\nVia SIP/2.0/UDP h\r\n\r\n",
    ))
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HeaderLine);
    assert_eq!(err.offset(), Some(24));
    assert_eq!(
        err.to_string(),
        "malformed header line: expected `name: value` (at byte 24)"
    );
    let err = Message::parse(Bytes::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Empty);
    let err = Message::parse(Bytes::from_static(
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n",
    ))
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unterminated);
}

#[test]
fn a_request_built_in_one_buffer_equals_one_built_line_by_line() {
    let lines = [
        ("From", "<sip:alice@example.com>;tag=1"),
        ("To", " <sip:alice@example.com> "),
        ("i", "abc@host"),
        ("CSeq", "7 REGISTER"),
        ("X-Unknown", "with\r\nline break"),
        ("Bad Name:", "kept under its cleaned name"),
        (" :", "dropped: no name left"),
        ("Contact", "<sip:x@127.0.0.1:5060>;expires=60"),
    ];
    let built = Message::request_with_headers(Method::Register, "sip:example.com", lines);
    let mut edited = Message::request(Method::Register, "sip:example.com");
    for (name, value) in lines {
        edited.append_header(name, value);
    }
    assert_eq!(text(&built.to_bytes()), text(&edited.to_bytes()));
    assert_eq!(built.call_id(), Some("abc@host"));
    assert_eq!(built.header("To"), Some("<sip:alice@example.com>"));
    assert_eq!(built.header("X-Unknown"), Some("with  line break"));
    assert_eq!(built.header("BadName"), Some("kept under its cleaned name"));
    assert_eq!(built.headers("Contact").count(), 1);
    // Edits after building work as on any message.
    let mut built = built;
    built.prepend_header("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1");
    let parsed = Message::parse(built.to_bytes()).expect("a well-formed request");
    assert_eq!(parsed.cseq().map(|c| c.0), Some(7));
}
