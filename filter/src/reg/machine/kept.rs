//! What a record keeps of its registrar's last challenge to answer the next REGISTER
//! early: per realm, the challenge its last answer chose, packed in one string.
//!
//! Kept instead of the header lines so that a refresh does not parse them again (that was
//! a fifth of a refresh's own work), and smaller than them: no parameter names, no quotes.

use crate::digest::{Algorithm, Authorization, Challenge, ChallengeAlgorithm, Qop, QopOptions};

/// Between the fields of one challenge: a NUL cannot be in a realm, nonce or opaque (the
/// challenge parser refuses control characters other than HTAB).
const FIELD: char = '\0';
/// Between challenges (also a control character).
const RECORD: char = '\n';

/// The challenges `answers` answered, one per realm, in the order they were answered.
pub(super) fn pack(answers: &[Authorization]) -> Box<str> {
    let mut out = String::with_capacity(
        answers
            .iter()
            .map(|a| 8 + a.realm.len() + a.nonce.len() + a.opaque.as_ref().map_or(0, String::len))
            .sum(),
    );
    for (i, answer) in answers.iter().enumerate() {
        if i > 0 {
            out.push(RECORD);
        }
        let algorithm = Algorithm::ALL
            .iter()
            .position(|a| *a == answer.algorithm)
            .expect("every algorithm is in ALL");
        out.push(char::from(b'0' + algorithm as u8));
        out.push(match answer.qop {
            None => '-',
            Some(Qop::Auth) => 'a',
            Some(Qop::AuthInt) => 'i',
        });
        out.push(if answer.userhash { 'u' } else { '-' });
        out.push_str(&answer.realm);
        out.push(FIELD);
        out.push_str(&answer.nonce);
        if let Some(opaque) = &answer.opaque {
            out.push(FIELD);
            out.push_str(opaque);
        }
    }
    out.into_boxed_str()
}

/// The challenges [`pack`] kept, each offering exactly what its answer chose, so that
/// answering them again chooses the same. `None` for anything `pack` did not write.
pub(super) fn unpack(packed: &str) -> Option<Vec<Challenge>> {
    packed
        .split(RECORD)
        .map(|record| {
            let mut flags = record.bytes();
            let algorithm = *Algorithm::ALL.get(usize::from(flags.next()?.checked_sub(b'0')?))?;
            let qop = match flags.next()? {
                b'-' => None,
                b'a' => Some(QopOptions {
                    auth: true,
                    ..QopOptions::default()
                }),
                b'i' => Some(QopOptions {
                    auth_int: true,
                    ..QopOptions::default()
                }),
                _ => return None,
            };
            let userhash = flags.next()? == b'u';
            let mut fields = record.get(3..)?.split(FIELD);
            Some(Challenge {
                realm: fields.next()?.to_owned(),
                nonce: fields.next()?.to_owned(),
                algorithm: ChallengeAlgorithm::Supported(algorithm),
                qop,
                opaque: fields.next().map(str::to_owned),
                stale: false,
                domain: Vec::new(),
                userhash,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{
        AuthRequest, CallCredentials, ChallengeKind, NonceCounts, answer_challenges, answer_parsed,
    };

    fn answer(lines: &[&str], nc_before: &mut NonceCounts) -> Vec<Authorization> {
        answer_challenges(&request(lines), nc_before, &mut Default::default())
            .unwrap()
            .values
    }

    fn request<'a>(lines: &'a [&'a str]) -> AuthRequest<'a> {
        AuthRequest {
            kind: ChallengeKind::Www,
            challenges: lines,
            method: "REGISTER",
            uri: "sip:registrar.test",
            body: &[],
            credentials: &[],
            call_credentials: Some(CallCredentials {
                username: "alice",
                password: "pw",
                realm: "",
            }),
            ha1_mode: false,
            cnonce: "c1",
        }
    }

    #[test]
    fn the_kept_challenges_answer_as_the_header_lines_do() {
        let cases: &[&[&str]] = &[
            &[r#"Digest realm="r.test", nonce="n1", qop="auth,auth-int", algorithm=MD5"#],
            &[r#"Digest realm="r.test", nonce="n\"2", opaque="o 1", algorithm=SHA-256"#],
            &[
                r#"Digest realm="edge", nonce="a", algorithm=MD5-sess, qop="auth", userhash=true"#,
                r#"Digest realm="r.test", nonce="b", algorithm=SHA-256, qop="auth""#,
                r#"Digest realm="r.test", nonce="c", algorithm=SHA-512-256, qop="auth-int""#,
            ],
        ];
        for lines in cases {
            let mut counts = NonceCounts::default();
            let first = answer(lines, &mut counts);
            let kept = unpack(&pack(&first)).expect("what pack writes unpacks");
            // Answered again from the kept form and from the lines, with the same counts.
            let mut from_lines_counts = counts.clone();
            let again_from_lines = answer(lines, &mut from_lines_counts);
            let again_kept = answer_parsed(
                &request(&[]),
                &kept,
                Vec::new(),
                &mut counts,
                &mut Default::default(),
            )
            .unwrap()
            .values;
            assert_eq!(again_kept, again_from_lines, "{lines:?}");
            assert_eq!(again_kept[0].nc, 2);
        }
    }

    #[test]
    fn anything_else_does_not_unpack() {
        for bad in ["", "9a-r\0n", "0x-r\0n", "0a", "0a-r"] {
            assert_eq!(unpack(bad), None, "{bad:?}");
        }
    }
}
