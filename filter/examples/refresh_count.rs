//! Runs `N` refreshes of one account through the registration machine, natively: the
//! kept challenge answered before the registrar asks, then the registrar's 200. Counted
//! by `bench/refresh-instructions.sh` under callgrind, so the filter's own work per
//! refresh can be compared between builds on a noisy machine.

use std::hint::black_box;

use uac_filter::reg::machine::{DueReason, Fresh, Registrar, Reply};
use uac_filter::reg::params::RegParams;
use uac_filter::reg::store::{Account, Credentials, LookupKey, MemoryStore, RegistrationStore};

fn fresh(n: u64) -> Fresh {
    Fresh {
        call_id: format!("5b0c2e9a1f7d4c38a6e1{n:012x}"),
        from_tag: format!("a81f3c{n:010x}"),
        cnonce: format!("0f3e9d2c7b6a5948{n:016x}"),
    }
}

fn reply(status: u16, headers: &[(&str, &str)]) -> Reply {
    Reply::read_from(status, "R".into(), |name| {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| (*v).to_owned())
            .collect()
    })
}

fn main() {
    let refreshes: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("usage: refresh_count N");
    let mut store = MemoryStore::with_rows(vec![(
        Account {
            l_uuid: "00000000000000000000000000004711".into(),
            l_username: "4711".into(),
            l_domain: "pbx.local".into(),
            r_username: "4711".into(),
            r_domain: "registrar.test".into(),
            realm: "registrar.test".into(),
            auth_username: "4711".into(),
            auth_proxy: "sip:127.0.0.1:5070".into(),
            expires: 60,
            ..Account::default()
        },
        Credentials::Password("secret-4711".into()),
    )]);
    let id = store.find(LookupKey::LUuid, "00000000000000000000000000004711")[0];
    let mut registrar = Registrar::new(RegParams {
        contact_addr: "127.0.0.1:5060".into(),
        // Every refresh answers the kept challenge however long the run.
        reuse_nonce_secs: u32::MAX,
        ..RegParams::default()
    });
    let challenge = reply(
        401,
        &[(
            "WWW-Authenticate",
            "Digest realm=\"registrar.test\", nonce=\"Z2xvYmFsLW5vbmNlLTE3MzMxNDk2MDAtNDcxMQ\", qop=\"auth\", algorithm=MD5",
        )],
    );
    let ok = reply(
        200,
        &[
            (
                "Contact",
                "<sip:00000000000000000000000000004711@127.0.0.1:5060>;expires=60",
            ),
            ("Expires", "60"),
        ],
    );
    let mut now = 1_733_149_600;
    let mut request_id = 0;
    let mut send = |registrar: &mut Registrar, out| {
        request_id += 1;
        registrar.sent(request_id, out);
        request_id
    };
    // The first registration: challenged, answered, registered; the challenge is kept.
    let out = registrar
        .on_due(&mut store, id, DueReason::Initial, now, fresh(0))
        .unwrap()
        .expect("a REGISTER");
    let rid = send(&mut registrar, out);
    let resend = match registrar
        .on_reply(&mut store, rid, &challenge, now, fresh(1))
        .unwrap()
    {
        uac_filter::reg::machine::ReplyOutcome::Resend(out) => *out,
        other => panic!("expected a resend, got {other:?}"),
    };
    let rid = send(&mut registrar, resend);
    registrar
        .on_reply(&mut store, rid, &ok, now, fresh(2))
        .unwrap();
    for n in 0..refreshes {
        now += 50;
        let out = registrar
            .on_due(&mut store, id, DueReason::Refresh, now, fresh(n + 3))
            .unwrap()
            .expect("a refresh");
        assert!(
            out.request.header("Authorization").is_some(),
            "the kept challenge is answered early"
        );
        let rid = send(&mut registrar, black_box(out));
        black_box(
            registrar
                .on_reply(&mut store, rid, &ok, now, || {
                    unreachable!("a 200 draws nothing")
                })
                .unwrap(),
        );
    }
}
