//! Per-message cost of the uac rule engine, natively over in-memory messages: the anonymizing
//! INVITE (rules + replace + vsf encoding), its 200 OK (restore), and an in-dialog BYE (vsf
//! decoding), in Kamailio-compatible and secure mode. `cargo bench -p uac-filter --bench rules`.
//! The in-memory message's own header lookups are included; the wasm hook call is not.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use uac_filter::host::Context;
use uac_filter::memory::{MemHost, MemMessage};
use uac_filter::uac::Uac;

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: \"Alice\" <sip:alice@example.com>;tag=ftag0\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:5070>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

fn config(secure: bool) -> String {
    let mut c = serde_json::json!({
        "restore_mode": "auto",
        "rule": [{
            "on": "request",
            "when": "is_method(\"INVITE\") && !has_totag()",
            "do": ["uac_replace_from(\"\\\"Anonymous\\\"\", \"sip:anonymous@anonymous.invalid\")"]
        }]
    });
    if secure {
        c["restore_secure"] = true.into();
        c["restore_secure_keys"] = serde_json::json!([
            "1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        ]);
    }
    c.to_string()
}

fn ctx(in_dialog: bool, own_route: Option<String>) -> Context {
    Context {
        in_dialog,
        dialog_key: Some("c1".into()),
        transaction_key: "tx".into(),
        own_route,
    }
}

fn bench_mode(c: &mut Criterion, name: &str, secure: bool) {
    let uac = Uac::configure(&config(secure)).expect("bench config");
    let mut invite = MemMessage::parse(INVITE).expect("bench INVITE");
    invite.rr_params = Some(String::new());
    let mut host = MemHost::default();
    c.bench_function(
        &format!("{name}/initial INVITE (rules + replace + encode)"),
        |b| {
            b.iter(|| {
                let mut m = invite.clone();
                black_box(uac.on_request(&ctx(false, None), &mut m, &mut host));
                m
            })
        },
    );
    let mut forwarded = invite.clone();
    uac.on_request(&ctx(false, None), &mut forwarded, &mut host);
    let route = format!(
        "<sip:127.0.0.1:5060;lr{}>",
        forwarded.rr_params.clone().unwrap()
    );
    let ok_text = INVITE
        .replace("INVITE sip:bob@example.com SIP/2.0", "SIP/2.0 200 OK")
        .replace(
            "From: \"Alice\" <sip:alice@example.com>;tag=ftag0",
            "From: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=ftag0",
        )
        .replace(
            "To: <sip:bob@example.com>",
            "To: <sip:bob@example.com>;tag=ttag0",
        );
    let ok = MemMessage::parse(&ok_text).expect("bench 200");
    c.bench_function(&format!("{name}/200 OK (restore)"), |b| {
        b.iter(|| {
            let mut m = ok.clone();
            black_box(uac.on_reply(&ctx(false, None), &mut m, &mut host));
            m
        })
    });
    let bye_text = INVITE
        .replace("INVITE sip:bob@example.com", "BYE sip:alice@127.0.0.1:5070")
        .replace("CSeq: 1 INVITE", "CSeq: 1 BYE")
        .replace(
            "From: \"Alice\" <sip:alice@example.com>;tag=ftag0",
            "From: <sip:bob@example.com>;tag=ttag0",
        )
        .replace(
            "To: <sip:bob@example.com>",
            "To: \"Anonymous\" <sip:anonymous@anonymous.invalid>;tag=ftag0",
        );
    let bye = MemMessage::parse(&bye_text).expect("bench BYE");
    let in_dialog = ctx(true, Some(route));
    c.bench_function(&format!("{name}/in-dialog BYE (decode + restore)"), |b| {
        b.iter(|| {
            let mut m = bye.clone();
            black_box(uac.on_request(&in_dialog, &mut m, &mut host));
            m
        })
    });
}

fn rules(c: &mut Criterion) {
    bench_mode(c, "kamailio", false);
    bench_mode(c, "secure", true);
}

criterion_group!(benches, rules);
criterion_main!(benches);
