//! libFuzzer target for the uac filter's digest answer: arbitrary bytes as the challenge
//! header lines of a 401/407, answered with fixed credentials. Checks that nothing panics
//! and that every header produced is one line whose realm parses back unchanged; the
//! resend plan runs over the same bytes as earlier credentials lines and CSeq.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uac_filter::digest::cseq::Cseq;
use uac_filter::digest::{
    Attempts, AuthRequest, CallCredentials, ChallengeKind, NonceCounts, answer_challenges,
    credentials_realm, parse_credentials, plan_resend,
};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    let credentials =
        parse_credentials(&["u:trunk.test:p", "u2:r:p:w"]).expect("fixed credential list");
    let mut counts = NonceCounts::default();
    for (kind, ha1_mode, secret_realm) in [
        (ChallengeKind::Proxy, false, ""),
        (ChallengeKind::Www, true, "trunk.test"),
    ] {
        let call = CallCredentials {
            username: "caller",
            // In HA1 mode, a 32-hex MD5 HA1.
            password: if ha1_mode {
                "0123456789abcdef0123456789abcdef"
            } else {
                "pw"
            },
            realm: secret_realm,
        };
        let request = AuthRequest {
            kind,
            challenges: &lines,
            method: "INVITE",
            uri: "sip:bob@127.0.0.1:5070",
            body: data,
            credentials: &credentials,
            call_credentials: Some(call),
            ha1_mode,
            cnonce: "fuzzcnonce",
        };
        let mut attempts = Attempts::default();
        // Twice: the second round sees the same realms (rejected or stale paths).
        for _ in 0..2 {
            if let Ok(answer) = answer_challenges(&request, &mut counts, &mut attempts) {
                for value in &answer.values {
                    let header = value.to_string();
                    assert!(!header.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0));
                    assert_eq!(
                        credentials_realm(&header).as_deref(),
                        Some(value.realm.as_str())
                    );
                }
            }
        }
        // The resend plan over the same bytes as earlier credentials lines and CSeq.
        let cseq = lines.first().copied().unwrap_or_default();
        if let Ok(plan) = plan_resend(
            &request,
            &lines,
            cseq,
            0,
            &mut counts,
            &mut Attempts::default(),
        ) {
            let number = |value: &str| Cseq::parse(value).expect("a planned CSeq parses").number;
            assert_eq!((number(&plan.cseq), plan.shift), (number(cseq) + 1, 1));
        }
    }
});
