//! `uac_auth()`'s decision: from a 401/407 and the request it answers, the headers to
//! add — one per challenging realm, each with the strongest algorithm it offers.

use thiserror::Error;

use super::challenge::{Challenge, ChallengeAlgorithm, ChallengeError, parse_header_lines};
use super::credentials::{CallCredentials, Credential, credentials_for};
use super::response::{Authorization, DigestInput, Qop, ResponseError, Secret};
use super::state::{AttemptVerdict, Attempts, NonceCounts};
use super::{Algorithm, HashKind};

/// Which challenge header a reply carries and which header answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// 401: WWW-Authenticate → Authorization.
    Www,
    /// 407: Proxy-Authenticate → Proxy-Authorization.
    Proxy,
}

impl ChallengeKind {
    /// The kind for a reply status; other statuses are not challenges.
    pub fn from_status(status: u16) -> Option<ChallengeKind> {
        match status {
            401 => Some(ChallengeKind::Www),
            407 => Some(ChallengeKind::Proxy),
            _ => None,
        }
    }

    pub const fn challenge_header(self) -> &'static str {
        match self {
            ChallengeKind::Www => "WWW-Authenticate",
            ChallengeKind::Proxy => "Proxy-Authenticate",
        }
    }

    pub fn answer_header(self) -> &'static str {
        match self {
            ChallengeKind::Www => "Authorization",
            ChallengeKind::Proxy => "Proxy-Authorization",
        }
    }
}

/// The request being authenticated and what the filter knows about the user.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    pub kind: ChallengeKind,
    /// Every WWW-Authenticate (or Proxy-Authenticate) value of the reply, in order.
    pub challenges: &'a [&'a str],
    pub method: &'a str,
    /// The Request-URI exactly as it will be sent.
    pub uri: &'a str,
    pub body: &'a [u8],
    pub credentials: &'a [Credential],
    pub call_credentials: Option<CallCredentials<'a>>,
    /// `uac_auth(1)`: the password is HA1 in hex (32 digits: MD5, 64: SHA-256).
    pub ha1_mode: bool,
    /// A fresh client nonce (random, from the caller).
    pub cnonce: &'a str,
}

/// Why no answer is given; the caller logs it and passes the failure back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthError {
    #[error("no Digest challenge in {header}{}", parse_errors_note(.parse_errors))]
    NoChallenge {
        header: &'static str,
        parse_errors: Vec<ChallengeError>,
    },
    #[error(
        "realm {realm:?}: no supported algorithm among {offered:?} (supported: MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256, SHA-512-256-sess)"
    )]
    UnsupportedAlgorithm { realm: String, offered: Vec<String> },
    #[error("realm {realm:?}: no supported qop among {offered:?} (supported: auth, auth-int)")]
    UnsupportedQop { realm: String, offered: Vec<String> },
    #[error(
        "realm {realm:?}: the HA1 given is for {algorithm}, which the challenge does not offer"
    )]
    Ha1AlgorithmMismatch {
        realm: String,
        algorithm: &'static str,
    },
    #[error("realm {realm:?}: no credentials for this realm")]
    NoCredentials { realm: String },
    #[error("realm {realm:?}: credentials refused (challenged again after an answer)")]
    Rejected { realm: String },
    #[error("realm {realm:?}: nonce declared stale more than {limit} times")]
    TooManyStale { realm: String, limit: u8 },
    #[error("realm {realm:?}: {source}")]
    Response {
        realm: String,
        source: ResponseError,
    },
}

fn parse_errors_note(errors: &[ChallengeError]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        let all: Vec<String> = errors.iter().map(ToString::to_string).collect();
        format!(" (malformed: {})", all.join("; "))
    }
}

/// The headers to add to the resent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAnswer {
    /// `Authorization` or `Proxy-Authorization`.
    pub header: &'static str,
    /// One value per challenging realm, in the order the realms first appeared.
    pub values: Vec<Authorization>,
    /// Challenge lines that did not parse but were not needed (for a log line).
    pub ignored: Vec<ChallengeError>,
}

/// Answers every realm of the reply or none: a realm left unanswered would only
/// challenge again. `nonce_counts` (per dialog) and `attempts` (per request) are the
/// caller's state and are updated only when an answer is returned.
pub fn answer_challenges(
    request: &AuthRequest<'_>,
    nonce_counts: &mut NonceCounts,
    attempts: &mut Attempts,
) -> Result<AuthAnswer, AuthError> {
    let (challenges, ignored) = parse_header_lines(request.challenges.iter().copied());
    answer_parsed(request, &challenges, ignored, nonce_counts, attempts)
}

/// [`answer_challenges`] for a caller that parsed `request.challenges` already
/// ([`parse_header_lines`]: `challenges` and the `ignored` errors); they are not parsed
/// again.
pub fn answer_parsed(
    request: &AuthRequest<'_>,
    challenges: &[Challenge],
    ignored: Vec<ChallengeError>,
    nonce_counts: &mut NonceCounts,
    attempts: &mut Attempts,
) -> Result<AuthAnswer, AuthError> {
    if challenges.is_empty() {
        return Err(AuthError::NoChallenge {
            header: request.kind.challenge_header(),
            parse_errors: ignored,
        });
    }
    let mut realms: Vec<&str> = Vec::new();
    for c in challenges {
        if !realms.contains(&c.realm.as_str()) {
            realms.push(&c.realm);
        }
    }
    let mut chosen = Vec::with_capacity(realms.len());
    for realm in realms {
        let offered: Vec<&Challenge> = challenges.iter().filter(|c| c.realm == realm).collect();
        let (username, password) =
            credentials_for(realm, request.call_credentials, request.credentials).ok_or_else(
                || AuthError::NoCredentials {
                    realm: realm.to_string(),
                },
            )?;
        let secret = if request.ha1_mode {
            Secret::Ha1(password)
        } else {
            Secret::Password(password)
        };
        let (challenge, algorithm, qop) = strongest(realm, &offered, secret)?;
        match attempts.verdict(realm, challenge.stale) {
            AttemptVerdict::Answer => {}
            AttemptVerdict::Rejected => {
                return Err(AuthError::Rejected {
                    realm: realm.to_string(),
                });
            }
            AttemptVerdict::TooManyStale => {
                return Err(AuthError::TooManyStale {
                    realm: realm.to_string(),
                    limit: Attempts::STALE_LIMIT,
                });
            }
        }
        chosen.push((challenge, algorithm, qop, username, secret));
    }
    // Everything is decided; only now is the caller's state touched.
    let mut values = Vec::with_capacity(chosen.len());
    for (challenge, algorithm, qop, username, secret) in chosen {
        let nc = nonce_counts.next(&challenge.realm, &challenge.nonce);
        let input = DigestInput {
            algorithm,
            username,
            realm: &challenge.realm,
            secret,
            nonce: &challenge.nonce,
            method: request.method,
            uri: request.uri,
            qop,
            nc,
            cnonce: request.cnonce,
            body: request.body,
        };
        let value = Authorization::build(&input, challenge.opaque.as_deref(), challenge.userhash)
            .map_err(|source| AuthError::Response {
            realm: challenge.realm.clone(),
            source,
        })?;
        attempts.record(&challenge.realm, challenge.stale);
        values.push(value);
    }
    Ok(AuthAnswer {
        header: request.kind.answer_header(),
        values,
        ignored,
    })
}

/// The challenge of one realm to answer: supported algorithm and qop, usable with the
/// secret (an HA1 fixes the hash), strongest algorithm first; ties go to the first sent.
fn strongest<'c>(
    realm: &str,
    offered: &[&'c Challenge],
    secret: Secret<'_>,
) -> Result<(&'c Challenge, Algorithm, Option<Qop>), AuthError> {
    let ha1_hash = match secret {
        Secret::Ha1(ha1) if ha1.len() == HashKind::Md5.hex_len() => Some(HashKind::Md5),
        // 64 hex digits could be SHA-512-256 as well; the common case (and what
        // Kamailio's and Asterisk's HA1 columns hold) is SHA-256.
        Secret::Ha1(_) => Some(HashKind::Sha256),
        Secret::Password(_) => None,
    };
    let mut best: Option<(&Challenge, Algorithm, Option<Qop>)> = None;
    let mut qop_unsupported = Vec::new();
    let mut hash_mismatch = false;
    for &c in offered {
        let ChallengeAlgorithm::Supported(algorithm) = c.algorithm else {
            continue;
        };
        if ha1_hash.is_some_and(|h| h != algorithm.hash()) {
            hash_mismatch = true;
            continue;
        }
        let qop = match &c.qop {
            None => None,
            // `auth` when offered: proxies on the way may rewrite the body (SDP).
            Some(q) if q.auth => Some(Qop::Auth),
            Some(q) if q.auth_int => Some(Qop::AuthInt),
            Some(q) => {
                qop_unsupported.extend(q.other.iter().cloned());
                continue;
            }
        };
        if best.is_none_or(|(_, b, _)| algorithm.strength() > b.strength()) {
            best = Some((c, algorithm, qop));
        }
    }
    if let Some(best) = best {
        return Ok(best);
    }
    let realm = realm.to_string();
    if !qop_unsupported.is_empty() {
        return Err(AuthError::UnsupportedQop {
            realm,
            offered: qop_unsupported,
        });
    }
    if let (true, Some(hash)) = (hash_mismatch, ha1_hash) {
        return Err(AuthError::Ha1AlgorithmMismatch {
            realm,
            algorithm: match hash {
                HashKind::Md5 => "MD5",
                _ => "SHA-256",
            },
        });
    }
    Err(AuthError::UnsupportedAlgorithm {
        realm,
        offered: offered
            .iter()
            .map(|c| match &c.algorithm {
                ChallengeAlgorithm::Supported(a) => a.name().to_string(),
                ChallengeAlgorithm::Unsupported(token) => token.clone(),
            })
            .collect(),
    })
}

/// The realm named in an Authorization / Proxy-Authorization value, so a resend can
/// replace the header it sent for that realm before (a stale nonce) instead of adding
/// a second one.
pub fn credentials_realm(value: &str) -> Option<String> {
    // Credentials share the challenge grammar and, like a challenge, carry realm and nonce.
    let challenges = super::challenge::parse_challenges(value).ok()?;
    challenges.into_iter().next().map(|c| c.realm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::credentials::parse_credentials;
    use crate::digest::response::compute_response;

    const CNONCE: &str = "0a4f113b";

    fn creds() -> Vec<Credential> {
        parse_credentials(&["trunkuser:trunk.test:trunkpass", "edge:edge.test:e:pw"]).unwrap()
    }

    fn request<'a>(challenges: &'a [&'a str], credentials: &'a [Credential]) -> AuthRequest<'a> {
        AuthRequest {
            kind: ChallengeKind::Proxy,
            challenges,
            method: "INVITE",
            uri: "sip:bob@127.0.0.1:5070",
            body: b"v=0\r\n",
            credentials,
            call_credentials: None,
            ha1_mode: false,
            cnonce: CNONCE,
        }
    }

    fn run(req: &AuthRequest<'_>) -> Result<AuthAnswer, AuthError> {
        answer_challenges(req, &mut NonceCounts::default(), &mut Attempts::default())
    }

    #[test]
    fn kamailio_proxy_challenge_is_answered_in_kamailio_field_order() {
        let list = creds();
        let lines = [r#"Digest realm="trunk.test", nonce="Y2FmZWJhYmU=", qop="auth""#];
        let answer = run(&request(&lines, &list)).unwrap();
        assert_eq!(answer.header, "Proxy-Authorization");
        assert_eq!(answer.values.len(), 1);
        let expected_response = compute_response(&DigestInput {
            algorithm: Algorithm::Md5,
            username: "trunkuser",
            realm: "trunk.test",
            secret: Secret::Password("trunkpass"),
            nonce: "Y2FmZWJhYmU=",
            method: "INVITE",
            uri: "sip:bob@127.0.0.1:5070",
            qop: Some(Qop::Auth),
            nc: 1,
            cnonce: CNONCE,
            body: b"",
        })
        .unwrap();
        assert_eq!(
            answer.values[0].to_string(),
            format!(
                "Digest username=\"trunkuser\", realm=\"trunk.test\", nonce=\"Y2FmZWJhYmU=\", \
                 uri=\"sip:bob@127.0.0.1:5070\", qop=auth, nc=00000001, cnonce=\"0a4f113b\", \
                 response=\"{expected_response}\", algorithm=MD5"
            )
        );
    }

    #[test]
    fn the_strongest_supported_algorithm_of_a_realm_wins() {
        let list = creds();
        let lines = [
            r#"Digest realm="trunk.test", nonce="1", algorithm=MD5, qop="auth""#,
            r#"Digest realm="trunk.test", nonce="2", algorithm=SHA-512-256, qop="auth", Digest realm="trunk.test", nonce="3", algorithm=SHA-1"#,
            r#"Digest realm="trunk.test", nonce="4", algorithm=SHA-256, qop="auth""#,
            r#"Digest realm="trunk.test", nonce="5", algorithm=MD5-sess, qop="auth""#,
        ];
        let answer = run(&request(&lines, &list)).unwrap();
        assert_eq!(answer.values.len(), 1);
        assert_eq!(answer.values[0].algorithm, Algorithm::Sha512_256);
        assert_eq!(answer.values[0].nonce, "2");
        // Without the SHA-512-256 line SHA-256 wins, and MD5-sess over MD5.
        let answer = run(&request(&[lines[0], lines[3], lines[2]], &list)).unwrap();
        assert_eq!(answer.values[0].algorithm, Algorithm::Sha256);
        let answer = run(&request(&[lines[0], lines[3]], &list)).unwrap();
        assert_eq!(answer.values[0].algorithm, Algorithm::Md5Sess);
    }

    #[test]
    fn every_realm_is_answered_when_several_proxies_challenge() {
        let list = creds();
        let lines = [
            r#"Digest realm="edge.test", nonce="e1", algorithm=SHA-256, qop="auth-int", opaque="op""#,
            r#"Digest realm="trunk.test", nonce="t1""#,
        ];
        let answer = run(&request(&lines, &list)).unwrap();
        let [edge, trunk] = answer.values.as_slice() else {
            panic!("two answers expected: {answer:?}");
        };
        assert_eq!(
            (edge.realm.as_str(), edge.username.as_str()),
            ("edge.test", "edge")
        );
        assert_eq!(edge.qop, Some(Qop::AuthInt));
        assert_eq!(edge.opaque.as_deref(), Some("op"));
        let edge_text = edge.to_string();
        assert!(
            edge_text.contains(", opaque=\"op\", qop=auth-int, nc=00000001, cnonce="),
            "{edge_text}"
        );
        assert_eq!((trunk.realm.as_str(), trunk.qop), ("trunk.test", None));
    }

    #[test]
    fn an_unsupported_algorithm_is_a_clear_error() {
        let list = creds();
        let lines = [r#"Digest realm="trunk.test", nonce="1", algorithm=AKAv1-MD5"#];
        let err = run(&request(&lines, &list)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "realm \"trunk.test\": no supported algorithm among [\"AKAv1-MD5\"] \
             (supported: MD5, MD5-sess, SHA-256, SHA-256-sess, SHA-512-256, SHA-512-256-sess)"
        );
        let lines = [r#"Digest realm="trunk.test", nonce="1", qop="auth-conf""#];
        assert!(matches!(
            run(&request(&lines, &list)),
            Err(AuthError::UnsupportedQop { .. })
        ));
    }

    #[test]
    fn wrong_password_ends_and_stale_is_answered_a_bounded_number_of_times() {
        let list = creds();
        let mut counts = NonceCounts::default();
        let mut attempts = Attempts::default();
        let first = [r#"Digest realm="trunk.test", nonce="n1", qop="auth""#];
        answer_challenges(&request(&first, &list), &mut counts, &mut attempts).unwrap();
        // The same realm again, not stale: the password was refused.
        let again = [r#"Digest realm="trunk.test", nonce="n2", qop="auth""#];
        assert_eq!(
            answer_challenges(&request(&again, &list), &mut counts, &mut attempts),
            Err(AuthError::Rejected {
                realm: "trunk.test".into()
            })
        );
        for i in 0..Attempts::STALE_LIMIT {
            let nonce = format!("s{i}");
            let line =
                format!(r#"Digest realm="trunk.test", nonce="{nonce}", qop="auth", stale=true"#);
            let answer =
                answer_challenges(&request(&[&line], &list), &mut counts, &mut attempts).unwrap();
            assert_eq!(answer.values[0].nonce, nonce, "answered with the new nonce");
            assert_eq!(answer.values[0].nc, 1);
        }
        let line = r#"Digest realm="trunk.test", nonce="s9", qop="auth", stale=TRUE"#;
        assert_eq!(
            answer_challenges(&request(&[line], &list), &mut counts, &mut attempts),
            Err(AuthError::TooManyStale {
                realm: "trunk.test".into(),
                limit: Attempts::STALE_LIMIT
            })
        );
    }

    #[test]
    fn nc_counts_up_when_a_later_request_gets_the_same_nonce() {
        let list = creds();
        let mut counts = NonceCounts::default();
        let line = [r#"Digest realm="trunk.test", nonce="n1", qop="auth""#];
        for expected in ["nc=00000001", "nc=00000002"] {
            // A new request (e.g. the BYE after the INVITE): fresh attempts, same dialog counts.
            let answer = answer_challenges(
                &request(&line, &list),
                &mut counts,
                &mut Attempts::default(),
            )
            .unwrap();
            assert!(answer.values[0].to_string().contains(expected));
        }
    }

    #[test]
    fn ha1_mode_picks_the_algorithm_of_the_ha1() {
        // HA1s of trunkuser:trunk.test:trunkpass, from the shell:
        //   printf '%s' trunkuser:trunk.test:trunkpass | openssl dgst -md5 (and -sha256)
        let md5 = "42573d8e0e7134a53b918b5216b07d1b";
        let sha256 = "cb6cdd8c4130d5df172d27c7d44372683e32fb0a4b83938ffca98f9d0ee2ae8c";
        let lines = [
            r#"Digest realm="trunk.test", nonce="1", algorithm=SHA-256, qop="auth""#,
            r#"Digest realm="trunk.test", nonce="2", algorithm=MD5, qop="auth""#,
        ];
        let passwords = creds();
        for (ha1, algorithm, line) in [(md5, Algorithm::Md5, 1), (sha256, Algorithm::Sha256, 0)] {
            let list = parse_credentials(&[format!("trunkuser:trunk.test:{ha1}")]).unwrap();
            let req = AuthRequest {
                ha1_mode: true,
                ..request(&lines, &list)
            };
            let with_ha1 = run(&req).unwrap().values.remove(0);
            assert_eq!(with_ha1.algorithm, algorithm);
            let with_password = run(&request(&lines[line..=line], &passwords)).unwrap();
            assert_eq!(with_ha1, with_password.values[0]);
        }
        let list = parse_credentials(&[format!("trunkuser:trunk.test:{md5}")]).unwrap();
        let req = AuthRequest {
            ha1_mode: true,
            ..request(&lines[..1], &list)
        };
        assert_eq!(
            run(&req),
            Err(AuthError::Ha1AlgorithmMismatch {
                realm: "trunk.test".into(),
                algorithm: "MD5"
            })
        );
    }

    #[test]
    fn per_call_credentials_and_missing_ones() {
        let list = creds();
        let lines = [r#"Digest realm="other.test", nonce="1""#];
        assert_eq!(
            run(&request(&lines, &list)),
            Err(AuthError::NoCredentials {
                realm: "other.test".into()
            })
        );
        let req = AuthRequest {
            call_credentials: Some(CallCredentials {
                username: "alice",
                password: "pw",
                realm: "",
            }),
            ..request(&lines, &list)
        };
        assert_eq!(run(&req).unwrap().values[0].username, "alice");
    }

    #[test]
    fn state_is_untouched_unless_every_realm_is_answered() {
        let list = creds();
        let lines = [
            r#"Digest realm="trunk.test", nonce="t""#,
            r#"Digest realm="unknown.test", nonce="u""#,
        ];
        let mut counts = NonceCounts::default();
        let mut attempts = Attempts::default();
        assert!(answer_challenges(&request(&lines, &list), &mut counts, &mut attempts).is_err());
        assert_eq!(counts, NonceCounts::default());
        assert_eq!(attempts, Attempts::default());
    }

    #[test]
    fn malformed_lines_are_reported_or_skipped() {
        let list = creds();
        let bad = r#"Digest realm="trunk.test", nonce="#;
        let err = run(&request(&[bad], &list)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no Digest challenge in Proxy-Authenticate (malformed: expected a value for parameter \"nonce\" at byte 33)"
        );
        let good = r#"Digest realm="trunk.test", nonce="1""#;
        let answer = run(&request(&[bad, good], &list)).unwrap();
        assert_eq!((answer.values.len(), answer.ignored.len()), (1, 1));
        let good_only = [good];
        let www = AuthRequest {
            kind: ChallengeKind::Www,
            ..request(&good_only, &list)
        };
        assert_eq!(run(&www).unwrap().header, "Authorization");
    }

    #[test]
    fn the_realm_of_a_sent_header_is_found_again() {
        let list = creds();
        let lines = [r#"Digest realm="trunk.test", nonce="1", qop="auth""#];
        let sent = run(&request(&lines, &list)).unwrap().values[0].to_string();
        assert_eq!(credentials_realm(&sent).as_deref(), Some("trunk.test"));
        assert_eq!(credentials_realm("Basic dXNlcjpwYXNz"), None);
    }
}
