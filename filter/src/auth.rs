//! `uac_auth()` wired to the host: answers a 401/407 on the request in the failure hook,
//! and keeps the dialog's CSeq shift so the caller's later requests and their replies match.
//!
//! State lives in host variables (it survives a filter swap): per dialog the CSeq shift,
//! the caller's From tag and the nonce counts; per transaction the answered realms and the
//! shift the request went out with (to map its replies back).

use crate::config::Options;
use crate::digest::cseq::{self, Direction};
use crate::digest::{Attempts, ResendError};
use crate::digest::{
    AuthRequest, CallCredentials, ChallengeKind, NonceCounts, cnonce_from_random, plan_resend,
};
use crate::host::{Context, HostState, Level, SipMessage};
use crate::nameaddr::NameAddr;
use crate::rules::action::{AUTH_MODE_HA1, AuthMode};
use crate::rules::pvar::Scope;

/// Dialog variable: how much the caller's CSeq numbers are raised on the way out.
pub const DIALOG_SHIFT: &str = "_uac_auth_shift";
/// Dialog variable: the From tag of the side whose requests are shifted (the caller).
pub const DIALOG_CALLER_TAG: &str = "_uac_auth_ftag";
/// Dialog variable: nonce counts (JSON), so a reused nonce gets nc + 1.
pub const DIALOG_NONCE_COUNTS: &str = "_uac_auth_nc";
/// Transaction variable: realms answered for this request (JSON), the retry bound.
pub const TRANSACTION_ATTEMPTS: &str = "_uac_auth_attempts";
/// Transaction variable: the shift the request went out with; its replies are lowered by it.
pub const TRANSACTION_SENT_SHIFT: &str = "_uac_auth_sent_shift";

/// Counter: challenges answered.
pub const AUTH_ANSWERED: &str = "uac_auth_answered";
/// Counter: challenges not answered (the failure goes back to the caller).
pub const AUTH_FAILED: &str = "uac_auth_failed";

fn from_tag<M: SipMessage + ?Sized>(msg: &M) -> Option<String> {
    let v = msg.header("From")?;
    NameAddr::parse(&v)?.param(&v, "tag").map(str::to_owned)
}

fn shift_of<H: HostState + ?Sized>(host: &H, dialog: &str) -> u32 {
    host.dialog_get(dialog, DIALOG_SHIFT)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn mode_flags<M: SipMessage + ?Sized>(
    mode: &AuthMode,
    request: &M,
    reply: &M,
) -> Result<u32, String> {
    match mode {
        AuthMode::Fixed(flags) => Ok(*flags),
        AuthMode::Template(t) => {
            let text = t.render(request, Some(reply));
            let text = text.trim();
            if text.is_empty() {
                return Ok(0);
            }
            text.parse()
                .map_err(|_| format!("uac_auth_mode: {text:?} is not an integer mode"))
        }
    }
}

/// `uac_auth(mode)` in the failure hook: adds the credentials lines for every challenge of
/// `reply` to `request`, raises its CSeq by one and records the state. An error leaves the
/// request and the state as they were.
pub fn answer<M, H>(
    opts: &Options,
    mode: &AuthMode,
    ctx: &Context,
    request: &mut M,
    reply: &M,
    scope: Scope<'_>,
    host: &mut H,
) -> Result<(), String>
where
    M: SipMessage + ?Sized,
    H: HostState + ?Sized,
{
    let status = reply.status().unwrap_or(0);
    let kind = ChallengeKind::from_status(status)
        .ok_or_else(|| format!("uac_auth: reply {status} is not a 401 or 407 challenge"))?;
    let dialog = ctx
        .dialog_key
        .as_deref()
        .ok_or("uac_auth: the request has no dialog key (Call-ID)")?;
    let flags = mode_flags(mode, &*request, reply)?;
    let method = request.method().ok_or("uac_auth: not a request")?;
    let uri = request.request_uri().ok_or("uac_auth: no Request-URI")?;
    let sent_cseq = request.header("CSeq").ok_or("uac_auth: no CSeq")?;
    let challenges = reply.headers(kind.challenge_header());
    let challenge_refs: Vec<&str> = challenges.iter().map(String::as_str).collect();
    let sent_lines = request.headers(kind.answer_header());
    let sent_refs: Vec<&str> = sent_lines.iter().map(String::as_str).collect();
    let body = request.body();
    let call = opts.call_credentials.as_ref().map(|t| {
        let render = |t: &crate::rules::pvar::Template| {
            t.render_in(&*request, Some(reply), scope).into_owned()
        };
        (render(&t.username), render(&t.password), render(&t.realm))
    });
    let mut random = [0u8; 16];
    host.random_bytes(&mut random);
    let cnonce = cnonce_from_random(&random);

    let shift = shift_of(host, dialog);
    let mut nonce_counts: NonceCounts = host
        .dialog_get(dialog, DIALOG_NONCE_COUNTS)
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default();
    let mut attempts: Attempts = host
        .transaction_get(&ctx.transaction_key, TRANSACTION_ATTEMPTS)
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or_default();
    let auth = AuthRequest {
        kind,
        challenges: &challenge_refs,
        method: &method,
        uri: &uri,
        body: &body,
        credentials: &opts.credentials,
        call_credentials: call
            .as_ref()
            .map(|(username, password, realm)| CallCredentials {
                username,
                password,
                realm,
            }),
        ha1_mode: flags & AUTH_MODE_HA1 != 0,
        cnonce: &cnonce,
    };
    let plan = plan_resend(
        &auth,
        &sent_refs,
        &sent_cseq,
        shift,
        &mut nonce_counts,
        &mut attempts,
    )
    .map_err(|e: ResendError| format!("uac_auth: {e}"))?;

    // Plain structs of strings and integers: serialization cannot fail.
    let nonce_counts = serde_json::to_string(&nonce_counts).unwrap_or_default();
    let attempts = serde_json::to_string(&attempts).unwrap_or_default();
    let store = |host: &mut H| -> Result<(), String> {
        let set_d = |host: &mut H, name: &str, value: &str| {
            host.dialog_set(dialog, name, Some(value))
                .map_err(|e| format!("uac_auth: dialog variable {name}: {e}"))
        };
        set_d(host, DIALOG_SHIFT, &plan.shift.to_string())?;
        if let Some(tag) = from_tag(&*request) {
            set_d(host, DIALOG_CALLER_TAG, &tag)?;
        }
        set_d(host, DIALOG_NONCE_COUNTS, &nonce_counts)?;
        for (name, value) in [
            (TRANSACTION_ATTEMPTS, attempts),
            (TRANSACTION_SENT_SHIFT, plan.shift.to_string()),
        ] {
            host.transaction_set(&ctx.transaction_key, name, Some(&value))
                .map_err(|e| format!("uac_auth: transaction variable {name}: {e}"))?;
        }
        Ok(())
    };
    store(host)?;
    for ignored in &plan.ignored {
        host.log(
            Level::Info,
            &format!("uac_auth: challenge line ignored: {ignored}"),
        );
    }
    request.remove_header(plan.header);
    for line in &plan.lines {
        request.add_header(plan.header, line);
    }
    request.set_header("CSeq", &plan.cseq);
    host.counter_add(AUTH_ANSWERED, 1);
    Ok(())
}

/// request hook: a request of the caller in a dialog whose INVITE was authenticated
/// (ACK, CANCEL, BYE, re-INVITE, ...) goes out with its CSeq raised by the dialog's shift.
pub fn renumber_request<M, H>(ctx: &Context, msg: &mut M, host: &mut H)
where
    M: SipMessage + ?Sized,
    H: HostState + ?Sized,
{
    let method = msg.method().unwrap_or_default();
    if !ctx.in_dialog && method != "ACK" && method != "CANCEL" {
        return;
    }
    let Some(dialog) = ctx.dialog_key.as_deref() else {
        return;
    };
    let shift = shift_of(host, dialog);
    if shift == 0 {
        return;
    }
    let caller = host.dialog_get(dialog, DIALOG_CALLER_TAG);
    let direction = if caller.is_none() || from_tag(msg) == caller {
        Direction::FromCaller
    } else {
        Direction::FromCallee
    };
    let Some(value) = msg.header("CSeq") else {
        return;
    };
    match cseq::outgoing_request(&value, direction, shift) {
        Ok(Some(raised)) => {
            msg.set_header("CSeq", &raised);
            if method != "ACK" {
                let _ = host.transaction_set(
                    &ctx.transaction_key,
                    TRANSACTION_SENT_SHIFT,
                    Some(&shift.to_string()),
                );
            }
        }
        Ok(None) => {}
        Err(e) => host.log(Level::Warn, &format!("uac_auth: CSeq not renumbered: {e}")),
    }
}

/// reply hook: a reply to a request this filter sent with a raised CSeq goes back with the
/// caller's own number.
pub fn map_reply<M, H>(ctx: &Context, msg: &mut M, host: &mut H)
where
    M: SipMessage + ?Sized,
    H: HostState + ?Sized,
{
    let Some(shift) = host
        .transaction_get(&ctx.transaction_key, TRANSACTION_SENT_SHIFT)
        .and_then(|v| v.parse::<u32>().ok())
    else {
        return;
    };
    let Some(value) = msg.header("CSeq") else {
        return;
    };
    match cseq::incoming_reply(&value, Direction::FromCaller, shift) {
        Ok(Some(lowered)) => msg.set_header("CSeq", &lowered),
        Ok(None) => {}
        Err(e) => host.log(
            Level::Warn,
            &format!("uac_auth: reply CSeq not mapped: {e}"),
        ),
    }
}
