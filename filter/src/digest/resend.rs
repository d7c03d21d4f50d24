//! What `uac_auth()` changes on the request before `t_relay()` sends it again: the
//! complete set of credentials lines and the CSeq + 1, planned from plain values.

use thiserror::Error;

use super::answer::{AuthError, AuthRequest, answer_challenges, credentials_realm};
use super::challenge::ChallengeError;
use super::cseq::{CseqError, resend};
use super::response::Authorization;
use super::state::{Attempts, NonceCounts};

/// The edits for the resent request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resend {
    /// `Authorization` or `Proxy-Authorization`.
    pub header: &'static str,
    /// Every `header` line the resent request carries, replacing those it had: earlier
    /// answers for realms not challenged now (another proxy on the path), then the new
    /// answers (a stale nonce's line is replaced, not doubled).
    pub lines: Vec<String>,
    /// The new CSeq value.
    pub cseq: String,
    /// The dialog's CSeq shift from now on.
    pub shift: u32,
    /// Challenge lines that did not parse but were not needed (for a log line).
    pub ignored: Vec<ChallengeError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResendError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot resend: {0}")]
    Cseq(#[from] CseqError),
}

/// Plans the resend of a request that got a 401/407. `sent_lines` are the request's
/// current `Authorization` / `Proxy-Authorization` values (of the reply's kind),
/// `sent_cseq` its CSeq value as sent, `shift` the dialog's CSeq shift so far. The
/// caller's state is updated only when a plan is returned.
pub fn plan_resend(
    request: &AuthRequest<'_>,
    sent_lines: &[&str],
    sent_cseq: &str,
    shift: u32,
    nonce_counts: &mut NonceCounts,
    attempts: &mut Attempts,
) -> Result<Resend, ResendError> {
    let (cseq, shift) = resend(sent_cseq, shift)?;
    let answer = answer_challenges(request, nonce_counts, attempts)?;
    let answered: Vec<&str> = answer.values.iter().map(|v| v.realm.as_str()).collect();
    let mut lines: Vec<String> = sent_lines
        .iter()
        .filter(|line| {
            credentials_realm(line).is_none_or(|realm| !answered.contains(&realm.as_str()))
        })
        .map(|line| line.to_string())
        .collect();
    lines.extend(answer.values.iter().map(Authorization::header_value));
    Ok(Resend {
        header: answer.header,
        lines,
        cseq,
        shift,
        ignored: answer.ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::answer::ChallengeKind;
    use crate::digest::credentials::{Credential, parse_credentials};

    fn creds() -> Vec<Credential> {
        parse_credentials(&["u:a.test:pa", "u:b.test:pb"]).unwrap()
    }

    fn request<'a>(challenges: &'a [&'a str], credentials: &'a [Credential]) -> AuthRequest<'a> {
        AuthRequest {
            kind: ChallengeKind::Proxy,
            challenges,
            method: "INVITE",
            uri: "sip:bob@b.test",
            body: b"",
            credentials,
            call_credentials: None,
            ha1_mode: false,
            cnonce: "c",
        }
    }

    #[test]
    fn first_resend_adds_the_answer_and_raises_cseq() {
        let list = creds();
        let challenge = [r#"Digest realm="a.test", nonce="n1", qop="auth""#];
        let plan = plan_resend(
            &request(&challenge, &list),
            &[],
            "1 INVITE",
            0,
            &mut NonceCounts::default(),
            &mut Attempts::default(),
        )
        .unwrap();
        assert_eq!(plan.header, "Proxy-Authorization");
        assert_eq!(plan.lines.len(), 1);
        assert!(plan.lines[0].contains(r#"realm="a.test", nonce="n1""#));
        assert_eq!((plan.cseq.as_str(), plan.shift), ("2 INVITE", 1));
    }

    #[test]
    fn a_second_proxy_keeps_the_first_answer_and_stale_replaces_its_own() {
        let list = creds();
        let (mut counts, mut attempts) = (NonceCounts::default(), Attempts::default());
        let first = [r#"Digest realm="a.test", nonce="n1""#];
        let a = plan_resend(
            &request(&first, &list),
            &[],
            "1 INVITE",
            0,
            &mut counts,
            &mut attempts,
        )
        .unwrap();
        // The next proxy on the path challenges for its realm.
        let second = [r#"Digest realm="b.test", nonce="m1""#];
        let sent: Vec<&str> = a.lines.iter().map(String::as_str).collect();
        let b = plan_resend(
            &request(&second, &list),
            &sent,
            &a.cseq,
            a.shift,
            &mut counts,
            &mut attempts,
        )
        .unwrap();
        assert_eq!(b.lines.len(), 2);
        assert_eq!(b.lines[0], a.lines[0], "the answer for a.test stays");
        assert!(b.lines[1].contains(r#"realm="b.test""#));
        assert_eq!((b.cseq.as_str(), b.shift), ("3 INVITE", 2));
        // a.test's nonce went stale: its line is replaced, b.test's kept.
        let stale = [r#"Digest realm="a.test", nonce="n2", stale=true"#];
        let sent: Vec<&str> = b.lines.iter().map(String::as_str).collect();
        let c = plan_resend(
            &request(&stale, &list),
            &sent,
            &b.cseq,
            b.shift,
            &mut counts,
            &mut attempts,
        )
        .unwrap();
        assert_eq!(c.lines.len(), 2);
        assert_eq!(c.lines[0], b.lines[1]);
        assert!(c.lines[1].contains(r#"nonce="n2""#));
        assert_eq!(c.shift, 3);
    }

    #[test]
    fn errors_leave_the_state_untouched() {
        let list = creds();
        let (mut counts, mut attempts) = (NonceCounts::default(), Attempts::default());
        let challenge = [r#"Digest realm="a.test", nonce="n1""#];
        assert_eq!(
            plan_resend(
                &request(&challenge, &list),
                &[],
                "2147483647 INVITE",
                0,
                &mut counts,
                &mut attempts
            ),
            Err(ResendError::Cseq(CseqError::Overflow {
                number: 2147483647,
                shift: 1
            }))
        );
        assert_eq!((counts.clone(), attempts.clone()), Default::default());
        let unknown = [r#"Digest realm="x.test", nonce="n1""#];
        let err = plan_resend(
            &request(&unknown, &list),
            &[],
            "1 INVITE",
            0,
            &mut counts,
            &mut attempts,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"realm "x.test": no credentials for this realm"#
        );
        assert_eq!((counts, attempts), Default::default());
    }
}
