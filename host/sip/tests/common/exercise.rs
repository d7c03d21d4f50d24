// Shared by the no-panic test and the cargo-fuzz target (included with `include!`): feed one
// input through every entry point of the codec and check the invariants that must hold.

use siphost_sip::{Bytes, Message, NameAddr, Uri, Via, frame_stream, reply_to_malformed};

/// Reads every accessor of `m` and parses every structured value it exposes.
pub fn read_everything(m: &Message) {
    let _ = (m.is_request(), m.method(), m.status(), m.reason(), m.body().len());
    let _ = (m.call_id(), m.cseq(), m.from_tag(), m.to_tag(), m.max_forwards(), m.from(), m.to());
    if let Some(Ok(u)) = m.request_uri().map(Uri::parse) {
        let _ = (u.params().count(), u.headers().count(), u.is_loose_route(), u.transport());
    }
    if let Some(via) = m.top_via() {
        let _ = (via.branch(), via.received(), via.rport(), via.param("maddr"), via.has_rfc3261_branch());
    }
    let names: Vec<String> = m.all_headers().map(|(n, _)| n.to_owned()).collect();
    for name in &names {
        let first = m.header(name);
        assert!(first.is_some(), "header({name:?}) must find a header listed by all_headers");
        let _ = m.headers(name).count();
        for value in m.header_values(name) {
            if let Ok(na) = NameAddr::parse(value) {
                let _ = (na.display_name(), na.tag(), na.params().count(), na.parsed_uri().map(|u| u.port));
            }
            if let Ok(v) = Via::parse(value) {
                let _ = (v.branch(), v.rport(), v.params().count());
            }
        }
    }
}

/// Runs `data` through framing, parsing, accessors, edits and serialization.
pub fn exercise(data: &[u8]) {
    let _ = frame_stream(data);
    let m = match Message::parse(Bytes::copy_from_slice(data)) {
        Ok(m) => m,
        Err(err) => {
            let _ = err.to_string();
            if let Some(reply) = reply_to_malformed(data, &err) {
                assert!(reply.starts_with(b"SIP/2.0 "), "a reply is a response");
                let _ = Message::parse(reply);
            }
            return;
        }
    };
    read_everything(&m);

    // An unedited valid message serializes to bytes that parse again to the same message.
    let wire = m.to_bytes();
    let again = Message::parse(wire.clone()).unwrap_or_else(|e| panic!("re-parse failed: {e}"));
    assert_eq!(again.body(), m.body());
    assert_eq!(again.call_id(), m.call_id());
    assert_eq!(again.cseq(), m.cseq());
    assert_eq!(again.status(), m.status());
    assert_eq!(again.request_uri(), m.request_uri());
    let mut out = Vec::new();
    m.write_to(&mut out);
    assert_eq!(out, wire, "write_to and to_bytes agree");

    // A response to a request is itself a valid message.
    if m.is_request() {
        let resp = m.response(400, "Bad Request", Some("fuzz"));
        let parsed = Message::parse(resp.to_bytes()).unwrap_or_else(|e| panic!("response re-parse failed: {e}"));
        assert_eq!(parsed.status(), Some(400));
        read_everything(&parsed);
    }

    // Edits never panic, and their serialization always frames the body correctly.
    let mut e = m.clone();
    e.prepend_header("Via", "SIP/2.0/UDP proxy.example;branch=z9hG4bKfuzz");
    e.prepend_header("Record-Route", "<sip:proxy.example;lr>");
    e.set_top_via_param("received", Some("192.0.2.1"));
    e.set_top_via_param("rport", Some("5060"));
    e.set_first_value_param("Record-Route", "vsf", Some("AAEC"));
    let _ = e.remove_first_value("Route");
    let _ = e.remove_first_value("Via");
    e.set_header("Max-Forwards", "69");
    e.set_request_uri("sip:next@example.com");
    e.append_header("X-Fuzz", "line\r\nInjected: yes");
    let _ = e.remove_header("Contact");
    read_everything(&e);
    let edited = e.to_bytes();
    let reparsed = Message::parse(edited).unwrap_or_else(|err| panic!("edited message re-parse failed: {err}"));
    assert_eq!(reparsed.header("Injected"), None, "edits cannot inject header lines");
    assert_eq!(reparsed.body(), m.body());
    e.set_body(Bytes::from_static(b"hello"), Some("text/plain"));
    let with_body = Message::parse(e.to_bytes()).unwrap_or_else(|err| panic!("set_body re-parse failed: {err}"));
    assert_eq!(with_body.body(), b"hello");
    assert_eq!(with_body.header("Content-Length"), Some("5"));
}
