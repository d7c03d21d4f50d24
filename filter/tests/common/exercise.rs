// Shared by the no-panic test and the cargo-fuzz `restore` target (included with `include!`):
// one input through the vsf/vst decoders and through the filter's in-dialog restore path,
// checking that a mangled parameter is refused cleanly and never trips the filter.

use std::sync::OnceLock;

use uac_filter::host::{Context, SipMessage};
use uac_filter::memory::{MemHost, MemMessage};
use uac_filter::restore::{SecureKeys, decode_kamailio, encode_kamailio};
use uac_filter::uac::Uac;

const FUZZ_KEY: &str = "7:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn filters() -> &'static (Uac, Uac, SecureKeys) {
    static FILTERS: OnceLock<(Uac, Uac, SecureKeys)> = OnceLock::new();
    FILTERS.get_or_init(|| {
        let rule = r#"[{"on":"request","when":"!has_totag()","do":["uac_replace_from(\"sip:x@y\")"]}]"#;
        let plain = format!(r#"{{"restore_passwd":"pw","rule":{rule}}}"#);
        let secure =
            format!(r#"{{"restore_secure":true,"restore_secure_keys":["{FUZZ_KEY}"],"rule":{rule}}}"#);
        (
            Uac::configure(&plain).expect("fuzz config"),
            Uac::configure(&secure).expect("fuzz secure config"),
            SecureKeys::parse(&[FUZZ_KEY.to_owned()]).expect("fuzz key"),
        )
    })
}

fn is_uri_text(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

/// `data`: parameter value, header URI and password separated by newlines.
pub fn exercise(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let param = parts.next().unwrap_or_default();
    let current = parts.next().unwrap_or_default();
    let passwd = parts.next().unwrap_or_default();
    if let Ok(uri) = decode_kamailio(param, current, passwd) {
        assert!(is_uri_text(&uri), "decoded {uri:?} must be printable");
    }
    if is_uri_text(param) && is_uri_text(current) && !passwd.contains('\0') {
        let enc = encode_kamailio(param, current, passwd);
        assert_eq!(decode_kamailio(&enc, current, passwd).as_deref(), Ok(param));
    }
    let (plain, secure, keys) = filters();
    assert!(keys.open(param, "vsf", current).is_err(), "forged a sealed parameter");
    // The whole in-dialog path, with the parameter in the Route and the URI in the header.
    if param.contains(['\r', '\n', '>']) || current.contains(['\r', '\n']) {
        return;
    }
    for (uac, host_tag) in [(plain, "f1"), (secure, "f1"), (plain, "other")] {
        let bye = format!(
            "BYE sip:a@h SIP/2.0\r\nFrom: <sip:bob@b>;tag={host_tag}\r\nTo: <{current}>;tag=f1\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n\r\n"
        );
        let Some(mut msg) = MemMessage::parse(&bye) else {
            return;
        };
        let ctx = Context {
            in_dialog: true,
            dialog_key: Some("c".into()),
            transaction_key: "t".into(),
            own_route: Some(format!("<sip:p;lr;ftag=f1;vsf={param};vst={param}>")),
        };
        let mut host = MemHost::default();
        let _ = uac.on_request(&ctx, &mut msg, &mut host);
        let _ = (msg.header("From"), msg.header("To"));
    }
}
