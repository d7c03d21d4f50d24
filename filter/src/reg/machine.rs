//! The REGISTER state machine (Kamailio's uac_reg.c semantics): due record → REGISTER,
//! final reply → registered / challenge answered / 423 retried / failed. Pure: time and
//! the fresh Call-ID, tag and cnonce come from the caller; the store is the host's.

use std::collections::HashMap;

use thiserror::Error;

use super::flags;
use super::params::RegParams;
use super::store::{Account, Credentials, LiveState, RecordId, RegistrationStore, StoreError};
use crate::digest::{
    Attempts, AuthError, AuthRequest, Authorization, CallCredentials, Challenge, ChallengeError,
    ChallengeKind, NonceCounts, answer_parsed, parse_header_lines,
};

mod kept;

/// A request for the WIT `transport.send-request` (the host adds Via, Max-Forwards and
/// Content-Length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub request_uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// `auth_proxy`: send there instead of the Request-URI.
    pub next_hop: Option<String>,
    /// The row's socket, else `default_socket` (`proto:host:port`); `None`: the host's choice.
    pub socket: Option<String>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn set_header(&mut self, name: &str, value: String) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value));
    }
}

/// A REGISTER to send and what the machine needs back when its reply comes.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub request: Request,
    attempt: Attempt,
}

impl Outgoing {
    pub fn record(&self) -> RecordId {
        self.attempt.account.id
    }
}

/// One registration transaction chain (initial REGISTER, its authenticated and 423 resends).
#[derive(Debug, Clone)]
struct Attempt {
    /// The row as read when the chain started: a reply needs only the live state read
    /// again (an edit by `uac.reg_reload` applies from the next chain, as to a REGISTER
    /// already on the wire).
    account: Account,
    /// UNIX seconds the last REGISTER of the chain went out; the binding counts from it.
    sent_at: u64,
    expires: u32,
    cseq: u32,
    attempts: Attempts,
    nonce_counts: NonceCounts,
    interval_retries: u8,
    /// The chain keeps its From tag (RFC 3261 §22.2 resends are the same request).
    from_tag: String,
    /// The challenge the chain's last REGISTER answered, kept for the next one on a 200.
    challenge: Option<KnownChallenge>,
}

/// A registrar's last challenge to a record, answered again on the record's next REGISTER
/// while it is younger than `reg_reuse_nonce`: per realm, the challenge the last answer
/// chose ([`kept`]), when it came, and how often its nonce was sent. About 100 bytes a
/// record, kept in memory only (a swap or restart costs one challenge).
#[derive(Debug, Clone)]
struct KnownChallenge {
    kind: ChallengeKind,
    kept: Box<str>,
    /// UNIX seconds.
    received_at: u64,
    sent: u32,
}

/// A final reply to a REGISTER (the glue copies it out of the WIT message).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    /// A reply of `status` as [`Registrar::on_reply`] needs it, copied out of wherever it is
    /// held (`values`: every line of a name) with only the header lines the machine reads:
    /// a 200 from a registrar carries a dozen lines, and copying each across the wasm
    /// boundary costs a string apiece.
    pub fn read_from(
        status: u16,
        reason: String,
        mut values: impl FnMut(&str) -> Vec<String>,
    ) -> Reply {
        let headers = Reply::headers_read(status)
            .iter()
            .flat_map(|&name| {
                values(name)
                    .into_iter()
                    .map(move |value| (name.to_owned(), value))
            })
            .collect();
        Reply {
            status,
            reason,
            headers,
        }
    }

    /// The header lines `on_reply` reads in a final reply of `status`.
    fn headers_read(status: u16) -> &'static [&'static str] {
        const WWW: &[&str] = &[ChallengeKind::Www.challenge_header()];
        const PROXY: &[&str] = &[ChallengeKind::Proxy.challenge_header()];
        match status {
            200..=299 => &["Contact", "Expires"],
            401 => WWW,
            407 => PROXY,
            423 => &["Min-Expires"],
            _ => &[],
        }
    }

    /// Every line of that name (case-insensitive; `m` is Contact's compact form).
    pub fn values(&self, name: &str) -> Vec<&str> {
        let compact = match name.to_ascii_lowercase().as_str() {
            "contact" => Some("m"),
            _ => None,
        };
        self.headers
            .iter()
            .filter(|(n, _)| {
                n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))
            })
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Fresh random values for one step (the caller draws them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    pub call_id: String,
    pub from_tag: String,
    pub cnonce: String,
}

/// Where a reply's [`Fresh`] values come from: drawn only when the reply needs them, as
/// only an answered challenge does (its cnonce); a 200 needs none.
pub trait FreshSource {
    fn draw(self) -> Fresh;
}

impl FreshSource for Fresh {
    fn draw(self) -> Fresh {
        self
    }
}

impl<F: FnOnce() -> Fresh> FreshSource for F {
    fn draw(self) -> Fresh {
        self()
    }
}

/// Why a step did nothing useful; the store's own errors pass through.
#[derive(Debug, Error)]
pub enum RegError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no registration record {0}")]
    UnknownRecord(RecordId),
}

/// Why the host handed a record in (WIT `due-reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueReason {
    Initial,
    Refresh,
    Retry,
    Requested,
    /// Handed out `reg_gc_interval` ago without a report: counted as failed.
    Stalled,
}

/// What a reply led to.
#[derive(Debug, Clone)]
pub enum ReplyOutcome {
    /// Not a request this instance sent (lost across a swap, or the record was removed).
    Unknown,
    Registered {
        granted_secs: u32,
    },
    /// Unregistered (`Contact: *`, or the 200 to Expires 0).
    Unregistered,
    /// Send this (authenticated, or with a raised Expires after 423).
    Resend(Box<Outgoing>),
    Failed {
        status: u16,
        reason: String,
    },
}

/// Kamailio's longest transaction (64 × T1): an ONGOING record younger than this, or than
/// reg_retry_interval, still waits for its reply.
const TRANSACTION_SECS: u64 = 32;
/// 423s answered in one chain before giving up (a registrar whose Min-Expires never fits).
const MAX_INTERVAL_RETRIES: u8 = 3;

/// The filter's side of remote registration: the params and the request id → record map.
#[derive(Debug, Default)]
pub struct Registrar {
    pub params: RegParams,
    pending: HashMap<u64, Attempt>,
    /// By record, while no REGISTER of it is in flight (the attempt carries it then).
    known: HashMap<RecordId, KnownChallenge>,
}

impl Registrar {
    pub fn new(params: RegParams) -> Registrar {
        Registrar {
            params,
            pending: HashMap::new(),
            known: HashMap::new(),
        }
    }

    /// Requests in flight.
    /// The record a REGISTER in flight belongs to.
    pub fn record_of(&self, request_id: u64) -> Option<RecordId> {
        self.pending.get(&request_id).map(|a| a.account.id)
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The host says `id` is due: the REGISTER to send, or `None` (disabled, in flight,
    /// expires 0, stalled and counted as failed).
    pub fn on_due(
        &mut self,
        store: &mut dyn RegistrationStore,
        id: RecordId,
        reason: DueReason,
        now: u64,
        fresh: Fresh,
    ) -> Result<Option<Outgoing>, RegError> {
        if self.known.capacity() == 0 && self.params.reuse_nonce_secs > 0 {
            // All at once, on the first record: growing the map later rehashes every
            // entry in one call, which at half a million kept challenges took more than
            // the 50 ms a call may use, and the time-out lost them all.
            self.known.reserve(self.params.reuse_nonce_max as usize);
        }
        let (account, mut state) = store.get_by_id(id).ok_or(RegError::UnknownRecord(id))?;
        if reason == DueReason::Stalled {
            self.forget(id);
            self.fail(store, &account, state, now, 408, "no reply (stalled)")?;
            return Ok(None);
        }
        if state.flags & flags::DISABLED != 0 {
            store.schedule(id, None)?;
            return Ok(None);
        }
        // reg_active = 0 (uac.reg_active 0): nothing is sent; the host keeps the schedule.
        if !self.params.active {
            return Ok(None);
        }
        if state.flags & flags::ONGOING != 0 {
            let wait = u64::from(self.params.retry_interval).max(TRANSACTION_SECS);
            if self
                .pending
                .values()
                .any(|a| a.account.id == id && now < a.sent_at + wait)
            {
                return Ok(None);
            }
            // Lost across a swap, or never answered: start over, as Kamailio's reset.
            self.forget(id);
            state.flags &= !(flags::ONGOING | flags::AUTHSENT);
        }
        let expires = if state.expires > 0 {
            state.expires
        } else {
            account.expires
        };
        if expires == 0 {
            store.schedule(id, None)?;
            return Ok(None);
        }
        Ok(Some(
            self.start(store, account, state, expires, now, fresh)?,
        ))
    }

    /// `uac.reg_unregister` / `uac_reg_send_unregister`: a REGISTER with Expires 0.
    pub fn unregister(
        &mut self,
        store: &mut dyn RegistrationStore,
        id: RecordId,
        now: u64,
        fresh: Fresh,
    ) -> Result<Outgoing, RegError> {
        let (account, mut state) = store.get_by_id(id).ok_or(RegError::UnknownRecord(id))?;
        self.forget(id);
        state.flags &= !(flags::ONGOING | flags::AUTHSENT);
        self.start(store, account, state, 0, now, fresh)
    }

    /// The glue sent `outgoing` and got this request id.
    pub fn sent(&mut self, request_id: u64, outgoing: Outgoing) {
        self.pending.insert(request_id, outgoing.attempt);
    }

    /// `transport.send-request` refused it: a failure like a 503.
    pub fn send_failed(
        &mut self,
        store: &mut dyn RegistrationStore,
        outgoing: Outgoing,
        now: u64,
        why: &str,
    ) -> Result<ReplyOutcome, RegError> {
        let account = outgoing.attempt.account;
        let state = store
            .state(account.id)
            .ok_or(RegError::UnknownRecord(account.id))?;
        self.fail(store, &account, state, now, 503, why)
    }

    /// The final reply (or the host's local 408 on time-out) to request `request_id`.
    pub fn on_reply(
        &mut self,
        store: &mut dyn RegistrationStore,
        request_id: u64,
        reply: &Reply,
        now: u64,
        fresh: impl FreshSource,
    ) -> Result<ReplyOutcome, RegError> {
        if reply.status < 200 {
            return Ok(ReplyOutcome::Unknown);
        }
        let Some(mut attempt) = self.pending.remove(&request_id) else {
            return Ok(ReplyOutcome::Unknown);
        };
        let id = attempt.account.id;
        let Some(mut state) = store.state(id) else {
            return Ok(ReplyOutcome::Unknown);
        };
        let account = &attempt.account;
        state.last_status = reply.status;
        state.last_reason = reply.reason.clone();
        match reply.status {
            200..=299 => {
                let contacts = reply.values("Contact");
                if attempt.expires == 0 || contacts.iter().any(|c| c.trim() == "*") {
                    state.flags &= !(flags::ONLINE | flags::ONGOING | flags::AUTHSENT);
                    state.registered_until = 0;
                    state.failures = 0;
                    store.update_state(id, &state)?;
                    store.schedule(id, None)?;
                    return Ok(ReplyOutcome::Unregistered);
                }
                let header_expires = reply
                    .values("Expires")
                    .first()
                    .and_then(|v| v.trim().parse::<u32>().ok());
                let granted = match own_contact(&contacts, &account.l_uuid) {
                    None => {
                        return self.fail(
                            store,
                            account,
                            state,
                            now,
                            reply.status,
                            "no own contact in the 200",
                        );
                    }
                    Some(param) => param.or(header_expires).unwrap_or(0),
                };
                if granted == 0 {
                    return self.fail(
                        store,
                        account,
                        state,
                        now,
                        reply.status,
                        "the 200 grants no expiry",
                    );
                }
                state.flags = (state.flags | flags::ONLINE) & !(flags::ONGOING | flags::AUTHSENT);
                state.registered_until = attempt.sent_at + u64::from(granted);
                state.failures = 0;
                store.registered(id, &state, granted)?;
                if let Some(challenge) = attempt.challenge.take()
                    && self.known.len() < self.params.reuse_nonce_max as usize
                {
                    self.known.insert(id, challenge);
                }
                Ok(ReplyOutcome::Registered {
                    granted_secs: granted,
                })
            }
            401 | 407 => {
                let kind = ChallengeKind::from_status(reply.status).expect("401 or 407");
                let lines = reply.values(kind.challenge_header());
                let (challenges, ignored) = parse_header_lines(lines.iter().copied());
                if !account.realm.is_empty() && !challenges.iter().any(|c| c.realm == account.realm)
                {
                    return self.fail(
                        store,
                        account,
                        state,
                        now,
                        reply.status,
                        "challenge realm differs from the row's realm",
                    );
                }
                let Some(credentials) = store.credentials(id) else {
                    return self.fail(store, account, state, now, reply.status, "no credentials");
                };
                let mut request =
                    self.request_for(account, &state, attempt.expires, &attempt.from_tag);
                let answered = authorize(
                    &mut request,
                    account,
                    &credentials,
                    Challenges {
                        kind,
                        lines: &lines,
                        parsed: &challenges,
                        ignored,
                    },
                    &fresh.draw().cnonce,
                    &mut attempt.nonce_counts,
                    &mut attempt.attempts,
                );
                let answers = match answered {
                    Ok(answers) => answers,
                    Err(e) => {
                        return self.fail(store, account, state, now, reply.status, &e.to_string());
                    }
                };
                // Kept for the next REGISTER only when it may be answered early.
                attempt.challenge = (self.params.reuse_nonce_secs > 0).then(|| KnownChallenge {
                    kind,
                    kept: kept::pack(&answers),
                    received_at: now,
                    sent: answers.iter().map(|a| a.nc).max().unwrap_or(0),
                });
                state.flags |= flags::AUTHSENT;
                Ok(ReplyOutcome::Resend(Box::new(
                    self.resend(store, state, attempt, request, now)?,
                )))
            }
            423 => {
                attempt.interval_retries += 1;
                if attempt.interval_retries > MAX_INTERVAL_RETRIES {
                    return self.fail(
                        store,
                        account,
                        state,
                        now,
                        423,
                        "423 Interval Too Brief repeated",
                    );
                }
                let min = reply
                    .values("Min-Expires")
                    .first()
                    .and_then(|v| v.trim().parse::<u32>().ok())
                    .filter(|m| *m > attempt.expires);
                attempt.expires = min.unwrap_or(attempt.expires.saturating_mul(2).max(1));
                state.expires = attempt.expires;
                // A new challenge will follow; the earlier answer does not count against it.
                attempt.attempts = Attempts::default();
                state.flags &= !flags::AUTHSENT;
                let request = self.request_for(account, &state, attempt.expires, &attempt.from_tag);
                Ok(ReplyOutcome::Resend(Box::new(
                    self.resend(store, state, attempt, request, now)?,
                )))
            }
            status => {
                let reason = reply.reason.clone();
                self.fail(store, account, state, now, status, &reason)
            }
        }
    }

    fn forget(&mut self, id: RecordId) {
        self.pending.retain(|_, a| a.account.id != id);
    }

    fn start(
        &mut self,
        store: &mut dyn RegistrationStore,
        account: Account,
        mut state: LiveState,
        expires: u32,
        now: u64,
        fresh: Fresh,
    ) -> Result<Outgoing, RegError> {
        let reuse = (self.params.keep_callid || expires == 0)
            && state.flags & flags::ONLINE != 0
            && !state.call_id.is_empty();
        if reuse {
            state.cseq += 1;
        } else {
            state.call_id = fresh.call_id.clone();
            state.cseq = 10;
        }
        // ONLINE stays: the old binding is valid until registered_until.
        state.flags = (state.flags | flags::ONGOING | flags::INIT) & !flags::AUTHSENT;
        let mut request = self.request_for(&account, &state, expires, &fresh.from_tag);
        let mut nonce_counts = NonceCounts::default();
        let known = self.known.remove(&account.id);
        // An older nonce is most likely expired at the registrar: answering it would only
        // earn a stale refusal (which some registrars log like a failed login).
        let max_age = u64::from(self.params.reuse_nonce_secs);
        let fresh_enough = |k: &KnownChallenge| now.saturating_sub(k.received_at) < max_age;
        let challenge = known.filter(fresh_enough).and_then(|known| {
            preauthorize(
                store,
                &account,
                &mut request,
                known,
                &mut nonce_counts,
                &fresh.cnonce,
            )
        });
        if challenge.is_some() {
            state.flags |= flags::AUTHSENT;
        }
        store.update_state(account.id, &state)?;
        Ok(Outgoing {
            request,
            attempt: Attempt {
                account,
                sent_at: now,
                expires,
                cseq: state.cseq,
                // The answer given before the ask does not count: a 401 to it is answered.
                attempts: Attempts::default(),
                nonce_counts,
                interval_retries: 0,
                from_tag: fresh.from_tag,
                challenge,
            },
        })
    }

    /// Same Call-ID and From tag, CSeq + 1 (RFC 3261 §22.2).
    fn resend(
        &mut self,
        store: &mut dyn RegistrationStore,
        mut state: LiveState,
        mut attempt: Attempt,
        mut request: Request,
        now: u64,
    ) -> Result<Outgoing, RegError> {
        attempt.cseq += 1;
        attempt.sent_at = now;
        state.cseq = attempt.cseq;
        request.set_header("CSeq", cseq_register(attempt.cseq));
        store.update_state(attempt.account.id, &state)?;
        Ok(Outgoing { request, attempt })
    }

    fn request_for(
        &self,
        account: &Account,
        state: &LiveState,
        expires: u32,
        from_tag: &str,
    ) -> Request {
        // Built by `concat` (one exact allocation): `format!` was a large share of a
        // refresh's own work.
        let aor = ["sip:", &account.r_username, "@", &account.r_domain].concat();
        let addr = if account.contact_addr.is_empty() {
            &self.params.contact_addr
        } else {
            &account.contact_addr
        };
        let contact = if account.contact_user.is_empty() {
            ["<sip:", &account.l_uuid, "@", addr, ">"].concat()
        } else {
            [
                "<sip:",
                &account.contact_user,
                "@",
                addr,
                ";line=",
                &account.l_uuid,
                ">",
            ]
            .concat()
        };
        let socket = if account.socket.is_empty() {
            &self.params.default_socket
        } else {
            &account.socket
        };
        Request {
            method: "REGISTER".into(),
            request_uri: ["sip:", &account.r_domain].concat(),
            headers: vec![
                ("From".into(), ["<", &aor, ">;tag=", from_tag].concat()),
                ("To".into(), ["<", &aor, ">"].concat()),
                ("Call-ID".into(), state.call_id.clone()),
                ("CSeq".into(), cseq_register(state.cseq)),
                ("Contact".into(), contact),
                ("Expires".into(), expires.to_string()),
            ],
            body: Vec::new(),
            next_hop: (!account.auth_proxy.is_empty()).then(|| account.auth_proxy.clone()),
            socket: (!socket.is_empty()).then(|| socket.clone()),
        }
    }

    fn fail(
        &mut self,
        store: &mut dyn RegistrationStore,
        account: &Account,
        mut state: LiveState,
        now: u64,
        status: u16,
        reason: &str,
    ) -> Result<ReplyOutcome, RegError> {
        self.known.remove(&account.id);
        state.flags &= !(flags::ONGOING | flags::AUTHSENT);
        if !state.is_registered(now) {
            state.flags &= !flags::ONLINE;
        }
        if self.params.retry_interval == 0 {
            state.flags |= flags::DISABLED;
        }
        // The next attempt starts a new Call-ID (Kamailio resets cseq to 0).
        state.call_id.clear();
        state.cseq = 0;
        state.failures = state.failures.saturating_add(1);
        state.last_status = status;
        state.last_reason = reason.to_owned();
        store.failed(account.id, &state)?;
        Ok(ReplyOutcome::Failed {
            status,
            reason: reason.to_owned(),
        })
    }
}

/// A reply's challenges: their kind, header lines, and what the lines parse to.
struct Challenges<'a> {
    kind: ChallengeKind,
    lines: &'a [&'a str],
    parsed: &'a [Challenge],
    ignored: Vec<ChallengeError>,
}

/// Adds the answer to `challenges` to `request`; returns what was answered, per realm.
fn authorize(
    request: &mut Request,
    account: &Account,
    credentials: &Credentials,
    challenges: Challenges<'_>,
    cnonce: &str,
    nonce_counts: &mut NonceCounts,
    attempts: &mut Attempts,
) -> Result<Vec<Authorization>, AuthError> {
    let (secret, ha1_mode) = match credentials {
        Credentials::Password(p) => (p.as_str(), false),
        Credentials::Ha1(h) => (h.as_str(), true),
    };
    let answer = answer_parsed(
        &AuthRequest {
            kind: challenges.kind,
            challenges: challenges.lines,
            method: "REGISTER",
            uri: &request.request_uri,
            body: &[],
            credentials: &[],
            call_credentials: Some(CallCredentials {
                username: &account.auth_username,
                password: secret,
                realm: &account.realm,
            }),
            ha1_mode,
            cnonce,
        },
        challenges.parsed,
        challenges.ignored,
        nonce_counts,
        attempts,
    )?;
    for value in &answer.values {
        request
            .headers
            .push((answer.header.to_owned(), value.header_value()));
    }
    Ok(answer.values)
}

/// Adds the answer to `known` to `request` before the registrar asks (RFC 7616 §3.4.5,
/// nc + 1). `None` (nothing added) when it cannot be answered any more.
fn preauthorize(
    store: &dyn RegistrationStore,
    account: &Account,
    request: &mut Request,
    known: KnownChallenge,
    nonce_counts: &mut NonceCounts,
    cnonce: &str,
) -> Option<KnownChallenge> {
    let credentials = store.credentials(account.id)?;
    let parsed = kept::unpack(&known.kept)?;
    for challenge in &parsed {
        nonce_counts.resume(&challenge.realm, &challenge.nonce, known.sent);
    }
    authorize(
        request,
        account,
        &credentials,
        Challenges {
            kind: known.kind,
            lines: &[],
            parsed: &parsed,
            ignored: Vec::new(),
        },
        cnonce,
        nonce_counts,
        &mut Attempts::default(),
    )
    .ok()?;
    Some(KnownChallenge {
        sent: known.sent + 1,
        ..known
    })
}

/// A REGISTER's CSeq value.
fn cseq_register(cseq: u32) -> String {
    [&cseq.to_string(), " REGISTER"].concat()
}

/// Among a 200's Contact values, ours: URI user == l_uuid, or `line` == l_uuid (the host is
/// not compared, as Kamailio). `Some(expires param)` when found.
fn own_contact(values: &[&str], l_uuid: &str) -> Option<Option<u32>> {
    values
        .iter()
        .flat_map(|v| split_contacts(v))
        .find_map(|contact| {
            let (uri, header_params) = match contact.find('<') {
                Some(open) => {
                    let close = contact[open..].find('>')? + open;
                    (&contact[open + 1..close], &contact[close + 1..])
                }
                None => contact.split_once(';').unwrap_or((contact, "")),
            };
            let rest = uri
                .strip_prefix("sip:")
                .or_else(|| uri.strip_prefix("sips:"))?;
            let (user, host_params) = rest.split_once('@').unwrap_or(("", rest));
            let line = host_params
                .split(';')
                .skip(1)
                .find_map(|p| p.strip_prefix("line="));
            let ours = user == l_uuid || line == Some(l_uuid);
            ours.then(|| {
                header_params.split(';').find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("expires")
                        .then(|| v.trim().parse().ok())?
                })
            })
        })
}

/// The comma-separated values of a Contact header value, trimmed (commas inside quotes or
/// `<...>` do not separate). An iterator: a 200 is read once per refresh, and collecting
/// the values first was a tenth of the filter's work on it.
fn split_contacts(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let text = rest?;
        let (mut quoted, mut bracket) = (false, false);
        for (i, b) in text.bytes().enumerate() {
            match b {
                b'"' => quoted = !quoted,
                b'<' if !quoted => bracket = true,
                b'>' if !quoted => bracket = false,
                b',' if !quoted && !bracket => {
                    rest = Some(&text[i + 1..]);
                    return Some(text[..i].trim());
                }
                _ => {}
            }
        }
        rest = None;
        Some(text.trim())
    })
}

#[cfg(test)]
mod tests;
