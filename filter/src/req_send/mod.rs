//! `uac_req_send()` (Kamailio's uac_send.c): the request the `$uac_req(...)` fields
//! describe, sent through the host, and what its replies lead to — a digest answer to a
//! 401/407 (a second challenge too, bounded) and the `uac:reply` event.
//!
//! Between a request and its reply the state lives in a host transaction variable keyed by
//! the request id, so it survives a filter swap and any worker's instance can take the reply.

pub mod fields;
pub mod rpc;

pub use fields::{DEFAULT_CSEQ, FLAG_HA1, Fresh, ReqError, ReqField, UacReq};

use serde::{Deserialize, Serialize};

use crate::digest::{
    Attempts, AuthRequest, CallCredentials, ChallengeKind, NonceCounts, answer_challenges,
    cnonce_from_random,
};
use crate::host::{HostState, Level, SipMessage, random_hex};

/// Counter: requests sent by `uac_req_send()` (resends with credentials included).
pub const REQ_SENT: &str = "uac_req_sent";
/// Counter: `uac_req_send()` calls that sent nothing (a missing field, a host refusal).
pub const REQ_FAILED: &str = "uac_req_failed";
/// Counter: 401/407 to a sent request answered with auser/apasswd.
pub const REQ_AUTH_ANSWERED: &str = "uac_req_auth_answered";
/// The event a reply to a sent request raises when `evroute` is set.
pub const EVENT_REPLY: &str = "uac:reply";
/// `$uac_req(evtype)`: a reply received from the network.
pub const EVTYPE_REPLY: u32 = 1;
/// `$uac_req(evtype)`: a reply the host generated (time-out, transport error).
pub const EVTYPE_LOCAL: u32 = 2;
/// Challenged resends per request chain; beyond it the challenge is the final reply.
pub const MAX_AUTH_RESENDS: u8 = 4;

/// Transaction-variable scope of a request in flight.
fn pending_key(request_id: u64) -> String {
    format!("_uac_req:{request_id}")
}
const PENDING_VAR: &str = "pending";

/// What a request in flight needs when its reply comes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Pending {
    req: UacReq,
    /// The Call-ID and From tag the chain keeps (resends are the same request, CSeq + 1).
    call_id: String,
    from_tag: String,
    cseq: u32,
    /// The last challenge of each kind (401, 407): a resend answers all of them, so a
    /// proxy's 407 followed by the far end's 401 ends with both credentials.
    challenges: Vec<(u16, Vec<String>)>,
    attempts_www: Attempts,
    attempts_proxy: Attempts,
    nonce_counts: NonceCounts,
    resends: u8,
}

/// `uac_req_send()`: builds the request from `req` and hands it to the host. Missing
/// method or ruri, or a bad field, is an error and nothing is sent.
pub fn send<H: HostState + ?Sized>(req: &UacReq, host: &mut H) -> Result<u64, String> {
    let fresh = Fresh {
        call_id: random_hex::<16, _>(host),
        from_tag: random_hex::<8, _>(host),
    };
    let cseq = if req.cseqno == 0 {
        DEFAULT_CSEQ
    } else {
        req.cseqno
    };
    let out = req.build(&fresh, cseq).map_err(|e| e.to_string())?;
    let id = host
        .send_request(&out)
        .map_err(|e| format!("uac_req_send: the host refused the request: {e}"))?;
    host.counter_add(REQ_SENT, 1);
    if req.wants_reply() {
        let pending = Pending {
            req: req.clone(),
            call_id: header_of(&out.headers, "Call-ID"),
            from_tag: fresh_or(&req.ftag, &fresh.from_tag),
            cseq,
            ..Pending::default()
        };
        store(host, id, &pending)?;
    }
    Ok(id)
}

fn fresh_or(given: &str, fresh: &str) -> String {
    if given.is_empty() {
        fresh.to_owned()
    } else {
        given.to_owned()
    }
}

fn header_of(headers: &[(String, String)], name: &str) -> String {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

fn store<H: HostState + ?Sized>(host: &mut H, id: u64, pending: &Pending) -> Result<(), String> {
    // Strings, integers and the digest state's plain structs: serialization cannot fail.
    let json = serde_json::to_string(pending).unwrap_or_default();
    host.transaction_set(&pending_key(id), PENDING_VAR, Some(&json))
        .map_err(|e| format!("uac_req_send: request state not kept: {e}"))
}

/// The reply to request `request_id` has come: a 401/407 is answered when auser and
/// apasswd are set (the answer goes out as a new request under a new id). Returns the
/// fields with `evcode`/`evtype` set when `uac:reply` is to be raised (`evroute` set);
/// `None` for a request this filter does not wait for.
pub fn on_reply<M, H>(request_id: u64, reply: &M, host: &mut H) -> Option<UacReq>
where
    M: SipMessage + ?Sized,
    H: HostState + ?Sized,
{
    let key = pending_key(request_id);
    let json = host.transaction_get(&key, PENDING_VAR)?;
    let _ = host.transaction_set(&key, PENDING_VAR, None);
    let Ok(mut pending) = serde_json::from_str::<Pending>(&json) else {
        host.log(
            Level::Warn,
            &format!("uac_req_send: state of request {request_id} unreadable; reply ignored"),
        );
        return None;
    };
    let status = reply.status().unwrap_or(0);
    if ChallengeKind::from_status(status).is_some()
        && !pending.req.auser.is_empty()
        && !pending.req.apasswd.is_empty()
    {
        match answer(&mut pending, reply, host) {
            Ok(id) => {
                host.counter_add(REQ_AUTH_ANSWERED, 1);
                if let Err(why) = store(host, id, &pending) {
                    host.log(Level::Warn, &why);
                }
            }
            Err(why) => host.log(Level::Warn, &format!("uac_req_send: {why}")),
        }
    }
    if pending.req.evroute == 0 {
        return None;
    }
    let mut req = pending.req;
    req.evcode = u32::from(status);
    req.evtype = if is_local(reply) {
        EVTYPE_LOCAL
    } else {
        EVTYPE_REPLY
    };
    Some(req)
}

/// A reply the host made itself (its local 408 on time-out, 503 when the request could not
/// be sent) has no source; a peer's reply has the peer's address.
fn is_local<M: SipMessage + ?Sized>(reply: &M) -> bool {
    reply.source().is_empty()
}

/// Answers the challenge of `reply` (and repeats the answers to earlier challenges of the
/// other kind) on a new request with CSeq + 1; returns the new request's id.
fn answer<M, H>(pending: &mut Pending, reply: &M, host: &mut H) -> Result<u64, String>
where
    M: SipMessage + ?Sized,
    H: HostState + ?Sized,
{
    if pending.resends >= MAX_AUTH_RESENDS {
        return Err(format!(
            "challenged {} times; the last challenge is the final reply",
            pending.resends
        ));
    }
    let status = reply.status().unwrap_or(0);
    let kind = ChallengeKind::from_status(status).ok_or("not a challenge")?;
    let lines = reply.headers(kind.challenge_header());
    pending.challenges.retain(|(s, _)| *s != status);
    pending.challenges.push((status, lines));
    let req = pending.req.clone();
    let cseq = pending.cseq.saturating_add(1);
    let fresh = Fresh {
        call_id: pending.call_id.clone(),
        from_tag: pending.from_tag.clone(),
    };
    let mut out = req.build(&fresh, cseq).map_err(|e| e.to_string())?;
    let ha1 = req.flags & FLAG_HA1 != 0;
    for (challenged, lines) in &pending.challenges {
        let Some(kind) = ChallengeKind::from_status(*challenged) else {
            continue;
        };
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let cnonce = cnonce_from_random(&{
            let mut r = [0u8; 16];
            host.random_bytes(&mut r);
            r
        });
        // Only the new challenge counts against the bound; the older one is repeated.
        let mut repeat = Attempts::default();
        let attempts = if *challenged != status {
            &mut repeat
        } else if kind == ChallengeKind::Www {
            &mut pending.attempts_www
        } else {
            &mut pending.attempts_proxy
        };
        let answer = answer_challenges(
            &AuthRequest {
                kind,
                challenges: &refs,
                method: &out.method,
                uri: &out.request_uri,
                body: &out.body,
                credentials: &[],
                call_credentials: Some(CallCredentials {
                    username: &req.auser,
                    password: &req.apasswd,
                    realm: "",
                }),
                ha1_mode: ha1,
                cnonce: &cnonce,
            },
            &mut pending.nonce_counts,
            attempts,
        )
        .map_err(|e| format!("{challenged} not answered: {e}"))?;
        for value in answer.values {
            out.headers
                .push((answer.header.to_owned(), value.header_value()));
        }
    }
    let id = host
        .send_request(&out)
        .map_err(|e| format!("the host refused the answered request: {e}"))?;
    host.counter_add(REQ_SENT, 1);
    pending.cseq = cseq;
    pending.resends += 1;
    Ok(id)
}
