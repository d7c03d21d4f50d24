//! Who may send through a tenant: ties each request to a configured endpoint (source
//! network, From, digest username), challenges and checks digest auth, throttles scanners.
//!
//! Sans-I/O: [`AccessControl::check`] takes the message, its source and the time and
//! returns a [`Verdict`]; the proxy sends the reply it carries. See README.md here.

pub mod config;
pub mod digest;
pub mod network;
pub mod rate;
pub mod table;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use siphost_sip::{Message, Method};

use self::config::{AccessConfig, AccessConfigError, EndpointConfig, Unidentified};
use self::digest::{Algorithm, Credentials, NonceCheck, NonceKey, ReplayTable};
use self::network::{Network, canonical};
use self::rate::RateLimiter;

/// How many accepted (nonce, nc) pairs are remembered for replay detection.
const REPLAY_TABLE_SIZE: usize = 65_536;

/// An identified endpoint: its configured name and what identified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: Arc<str>,
    pub by: IdentifiedBy,
}

/// Which identifier claimed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifiedBy {
    Source,
    From,
    Username,
}

/// Whether a request is addressed to this host itself or is to be relayed; decides
/// between 401/WWW-Authenticate and 407/Proxy-Authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Local,
    Relayed,
}

/// What the proxy does with a request.
#[derive(Debug)]
pub enum Verdict {
    /// Go on. `None` only for requests that follow an existing dialog or transaction
    /// (in-dialog, ACK, CANCEL) from a source no endpoint claims; those are not
    /// challenged, but they are rate limited.
    Allow(Option<Endpoint>),
    /// Send this 401/407 statelessly and stop.
    Challenge(Box<Message>),
    /// Send this 403 statelessly and stop.
    Refuse(Box<Message>),
    /// Drop silently (rate limited, `unidentified = "drop"`, or an ACK for our own reply).
    Drop,
}

/// Where a password or HA1 comes from: the config ([`ConfigCredentials`]) or, in front of
/// a database table, [`table::TableCredentials`], which keeps the rows in memory since a
/// check must not wait on I/O.
pub trait CredentialStore: Send {
    /// The secret of `username` in `realm`, and the endpoint it identifies.
    fn lookup(&self, username: &str, realm: &str) -> Option<StoredCredentials>;
    /// Whether any endpoint is identified by username alone (then unknown sources are
    /// challenged instead of refused).
    fn identifies_by_username(&self) -> bool;
}

/// A username's secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    pub endpoint: Arc<str>,
    pub secret: Secret,
}

/// A password, or HA1 values per algorithm (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    Password(String),
    Ha1 {
        md5: Option<String>,
        sha256: Option<String>,
    },
}

impl Secret {
    /// HA1 for `algorithm`, if this secret can give it.
    pub fn ha1(&self, algorithm: Algorithm, username: &str, realm: &str) -> Option<String> {
        match (self, algorithm) {
            (Secret::Password(p), _) => Some(digest::ha1(algorithm, username, realm, p)),
            (Secret::Ha1 { md5, .. }, Algorithm::Md5) => md5.as_ref().map(|h| h.to_lowercase()),
            (Secret::Ha1 { sha256, .. }, Algorithm::Sha256) => {
                sha256.as_ref().map(|h| h.to_lowercase())
            }
        }
    }
}

/// Credentials from `[[tenant.access.endpoint]]` entries.
#[derive(Debug, Default)]
pub struct ConfigCredentials {
    entries: Vec<(String, StoredCredentials)>,
}

impl ConfigCredentials {
    pub fn new(endpoints: &[EndpointConfig]) -> ConfigCredentials {
        let entries = endpoints
            .iter()
            .filter_map(|e| {
                let username = e.username.clone()?;
                let secret = match &e.password {
                    Some(p) => Secret::Password(p.clone()),
                    None => Secret::Ha1 {
                        md5: e.ha1.clone(),
                        sha256: e.ha1_sha256.clone(),
                    },
                };
                Some((
                    username,
                    StoredCredentials {
                        endpoint: Arc::from(e.name.as_str()),
                        secret,
                    },
                ))
            })
            .collect();
        ConfigCredentials { entries }
    }
}

impl CredentialStore for ConfigCredentials {
    fn lookup(&self, username: &str, _realm: &str) -> Option<StoredCredentials> {
        self.entries
            .iter()
            .find(|(u, _)| u == username)
            .map(|(_, c)| c.clone())
    }

    fn identifies_by_username(&self) -> bool {
        !self.entries.is_empty()
    }
}

/// A snapshot of [`AccessCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AccessStats {
    pub allowed: u64,
    pub challenged: u64,
    pub refused: u64,
    pub dropped: u64,
    pub unidentified: u64,
    pub auth_failed: u64,
    pub stale: u64,
    pub rate_limited: u64,
    pub replays: u64,
}

/// What the checks decided, counted for `/metrics`; shared by a tenant's listeners and
/// read at scrape time. `allowed + challenged + refused + dropped` is every check; the
/// others say why.
#[derive(Debug, Default)]
pub struct AccessCounters {
    pub allowed: AtomicU64,
    pub challenged: AtomicU64,
    pub refused: AtomicU64,
    pub dropped: AtomicU64,
    /// No endpoint claimed the request (then refused or dropped per `unidentified`).
    pub unidentified: AtomicU64,
    /// Credentials for our realm were given and were wrong or unusable.
    pub auth_failed: AtomicU64,
    /// A right answer on an expired nonce (challenged again with `stale=true`).
    pub stale: AtomicU64,
    /// Dropped because the source's token bucket was empty.
    pub rate_limited: AtomicU64,
    /// A (nonce, nc) pair seen before (refused).
    pub replays: AtomicU64,
}

impl AccessCounters {
    pub fn snapshot(&self) -> AccessStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AccessStats {
            allowed: get(&self.allowed),
            challenged: get(&self.challenged),
            refused: get(&self.refused),
            dropped: get(&self.dropped),
            unidentified: get(&self.unidentified),
            auth_failed: get(&self.auth_failed),
            stale: get(&self.stale),
            rate_limited: get(&self.rate_limited),
            replays: get(&self.replays),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

struct CompiledEndpoint {
    name: Arc<str>,
    networks: Vec<Network>,
    /// (user, lower-case domain).
    from: Vec<(String, String)>,
    username: Option<String>,
    auth: bool,
}

/// One tenant's access control. Owned by the proxy core (`&mut self`: the replay table
/// and buckets change with each check).
pub struct AccessControl {
    realm: String,
    nonce_expire: u64,
    unidentified: Unidentified,
    algorithms: Vec<Algorithm>,
    key: NonceKey,
    opaque: String,
    reply_tag: String,
    endpoints: Vec<CompiledEndpoint>,
    credentials: Box<dyn CredentialStore>,
    limiter: RateLimiter,
    replays: ReplayTable,
    /// Serial of the next nonce.
    next_nonce: u64,
    counters: Arc<AccessCounters>,
}

impl std::fmt::Debug for AccessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessControl")
            .field("realm", &self.realm)
            .field("endpoints", &self.endpoints.len())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The outcome of checking a request's credentials.
enum AuthOutcome {
    Ok,
    /// None, unusable or wrong credentials: a new challenge (counted as a failure when
    /// credentials were given).
    Challenge {
        failed: bool,
    },
    /// Right response on an expired nonce.
    Stale,
    Replay,
}

impl AccessControl {
    /// Builds a tenant's access control. `random_secret` keys the nonces when the config
    /// gives no `secret` (pass fresh random bytes per process).
    pub fn new(
        tenant: &str,
        config: &AccessConfig,
        random_secret: [u8; 32],
    ) -> Result<AccessControl, AccessConfigError> {
        config.validate()?;
        let credentials = Box::new(ConfigCredentials::new(&config.endpoint));
        Self::with_store(tenant, config, random_secret, credentials)
    }

    /// As [`AccessControl::new`], with credentials from another store.
    pub fn with_store(
        tenant: &str,
        config: &AccessConfig,
        random_secret: [u8; 32],
        credentials: Box<dyn CredentialStore>,
    ) -> Result<AccessControl, AccessConfigError> {
        config.validate()?;
        let realm = config.realm.clone().unwrap_or_else(|| tenant.to_owned());
        let key = match &config.secret {
            Some(secret) => NonceKey::new(secret.as_bytes()),
            None => NonceKey::new(&random_secret),
        };
        let endpoints = config
            .endpoint
            .iter()
            .map(|e| CompiledEndpoint {
                name: Arc::from(e.name.as_str()),
                // Validated above.
                networks: e
                    .source
                    .iter()
                    .filter_map(|s| Network::parse(s).ok())
                    .collect(),
                from: e
                    .from
                    .iter()
                    .filter_map(|f| f.split_once('@'))
                    .map(|(u, d)| (u.to_owned(), d.to_ascii_lowercase()))
                    .collect(),
                username: e.username.clone(),
                auth: e.auth,
            })
            .collect();
        Ok(AccessControl {
            opaque: key.opaque(&realm),
            reply_tag: key.reply_tag(),
            realm,
            nonce_expire: config.nonce_expire,
            unidentified: config.unidentified,
            algorithms: config.parsed_algorithms()?,
            key,
            endpoints,
            credentials,
            limiter: RateLimiter::new(&config.rate_limit),
            replays: ReplayTable::new(REPLAY_TABLE_SIZE),
            next_nonce: 0,
            counters: Arc::default(),
        })
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    pub fn stats(&self) -> AccessStats {
        self.counters.snapshot()
    }

    /// Counts into `counters` from now on (a tenant's listeners share one set).
    pub fn with_counters(mut self, counters: Arc<AccessCounters>) -> AccessControl {
        self.counters = counters;
        self
    }

    /// Decides what becomes of request `msg` from `source`. `now` is wall-clock time since
    /// the Unix epoch (nonces carry it, so it must survive restarts when `secret` is set).
    pub fn check(
        &mut self,
        msg: &Message,
        source: SocketAddr,
        target: Target,
        now: Duration,
    ) -> Verdict {
        let verdict = self.decide(msg, canonical(source.ip()), target, now);
        let counters = &self.counters;
        bump(match &verdict {
            Verdict::Allow(_) => &counters.allowed,
            Verdict::Challenge(_) => &counters.challenged,
            Verdict::Refuse(_) => &counters.refused,
            Verdict::Drop => &counters.dropped,
        });
        verdict
    }

    fn decide(&mut self, msg: &Message, source: IpAddr, target: Target, now: Duration) -> Verdict {
        let Some(method) = msg.method() else {
            return Verdict::Drop;
        };
        let by_address = self.identify_by_address(msg, source);
        // Requests that follow a dialog or transaction are not challenged: an ACK or
        // CANCEL cannot be, and in-dialog requests were admitted with their dialog.
        let follows = matches!(method, Method::Ack | Method::Cancel) || msg.to_tag().is_some();
        if follows {
            if *method == Method::Ack && msg.to_tag() == Some(self.reply_tag.as_str()) {
                // The ACK of our own 401/407/403: absorbed here.
                return Verdict::Drop;
            }
            if by_address.is_none() && !self.limiter.take(source, now) {
                bump(&self.counters.rate_limited);
                return Verdict::Drop;
            }
            return Verdict::Allow(by_address.map(|(i, by)| self.endpoint(i, by)));
        }
        // An endpoint identified by address that needs no auth is the fast path; all else
        // first needs a token, so a scanner stops costing anything once its bucket is dry.
        if let Some((i, by)) = by_address
            && !self.endpoints[i].auth
        {
            return Verdict::Allow(Some(self.endpoint(i, by)));
        }
        if !self.limiter.has_token(source, now) {
            bump(&self.counters.rate_limited);
            return Verdict::Drop;
        }
        let credentials = self.our_credentials(msg);
        let claimed = match by_address {
            Some((i, by)) => Some((self.endpoint(i, by), self.endpoints[i].username.clone())),
            None => credentials.as_ref().and_then(|c| {
                let stored = self.credentials.lookup(&c.username, &self.realm)?;
                let endpoint = Endpoint {
                    name: stored.endpoint,
                    by: IdentifiedBy::Username,
                };
                Some((endpoint, Some(c.username.clone())))
            }),
        };
        let Some((endpoint, username)) = claimed else {
            self.limiter.take(source, now);
            if credentials.is_none() && self.credentials.identifies_by_username() {
                return self.challenge(msg, target, now, false);
            }
            bump(&self.counters.unidentified);
            tracing::info!(%source, realm = %self.realm, "request from an unidentified source");
            return match self.unidentified {
                Unidentified::Forbidden => {
                    Verdict::Refuse(Box::new(self.reply(msg, 403, "Forbidden")))
                }
                Unidentified::Drop => Verdict::Drop,
            };
        };
        let Some(username) = username else {
            return Verdict::Allow(Some(endpoint));
        };
        match self.authenticate(msg, credentials.as_ref(), &username, now) {
            AuthOutcome::Ok => Verdict::Allow(Some(endpoint)),
            AuthOutcome::Stale => {
                bump(&self.counters.stale);
                self.challenge(msg, target, now, true)
            }
            AuthOutcome::Challenge { failed } => {
                self.limiter.take(source, now);
                if failed {
                    bump(&self.counters.auth_failed);
                    tracing::info!(%source, user = %username, "digest authentication failed");
                }
                self.challenge(msg, target, now, false)
            }
            AuthOutcome::Replay => {
                bump(&self.counters.replays);
                self.limiter.take(source, now);
                tracing::info!(%source, user = %username, "replayed digest nonce count");
                Verdict::Refuse(Box::new(self.reply(msg, 403, "Replayed Credentials")))
            }
        }
    }

    fn endpoint(&self, i: usize, by: IdentifiedBy) -> Endpoint {
        Endpoint {
            name: self.endpoints[i].name.clone(),
            by,
        }
    }

    /// The first endpoint whose source network holds `source`, else the first whose From
    /// matches.
    fn identify_by_address(&self, msg: &Message, source: IpAddr) -> Option<(usize, IdentifiedBy)> {
        if let Some(i) = self
            .endpoints
            .iter()
            .position(|e| e.networks.iter().any(|n| n.contains(source)))
        {
            return Some((i, IdentifiedBy::Source));
        }
        let from = msg.from()?;
        let uri = from.parsed_uri().ok()?;
        let user = uri.user?;
        self.endpoints
            .iter()
            .position(|e| {
                e.from
                    .iter()
                    .any(|(u, d)| u == user && d.eq_ignore_ascii_case(uri.host))
            })
            .map(|i| (i, IdentifiedBy::From))
    }

    /// The first Authorization or Proxy-Authorization credentials for our realm.
    fn our_credentials(&self, msg: &Message) -> Option<Credentials> {
        ["Proxy-Authorization", "Authorization"]
            .iter()
            .flat_map(|name| msg.headers(name))
            .filter_map(|value| Credentials::parse(value).ok())
            .find(|c| c.realm == self.realm)
    }

    fn authenticate(
        &mut self,
        msg: &Message,
        credentials: Option<&Credentials>,
        username: &str,
        now: Duration,
    ) -> AuthOutcome {
        let Some(c) = credentials else {
            return AuthOutcome::Challenge { failed: false };
        };
        let failed = AuthOutcome::Challenge { failed: true };
        if c.username != username {
            return failed;
        }
        let algorithm = match c.algorithm.as_deref() {
            None => Algorithm::Md5,
            Some(name) => match Algorithm::from_name(name) {
                Some(a) => a,
                None => return failed,
            },
        };
        if !self.algorithms.contains(&algorithm) {
            return failed;
        }
        // qop=auth is required: without nc there is no replay protection.
        let (Some("auth"), Some(nc_text), Some(cnonce)) =
            (c.qop.as_deref(), c.nc.as_deref(), c.cnonce.as_deref())
        else {
            return failed;
        };
        let Some(nc) = (nc_text.len() == 8)
            .then(|| u32::from_str_radix(nc_text, 16).ok())
            .flatten()
        else {
            return failed;
        };
        if c.opaque.as_deref().is_some_and(|o| o != self.opaque) {
            return failed;
        }
        // `uri` is hashed as sent and not compared with the Request-URI: clients differ
        // (SIPp hashes `sip:host:port`), and Kamailio does not compare it by default
        // either. Binding to this request is the nonce and nc's job.
        let Some(method) = msg.method() else {
            return failed;
        };
        let Some(stored) = self.credentials.lookup(username, &self.realm) else {
            return failed;
        };
        let Some(ha1) = stored.secret.ha1(algorithm, username, &self.realm) else {
            return failed;
        };
        let expected = digest::response_qop_auth(
            algorithm,
            &ha1,
            &c.nonce,
            nc_text,
            cnonce,
            method.as_str(),
            &c.uri,
        );
        if !digest::constant_time_eq(
            expected.as_bytes(),
            c.response.to_ascii_lowercase().as_bytes(),
        ) {
            return failed;
        }
        let secs = now.as_secs();
        match self
            .key
            .check(&c.nonce, &self.realm, secs, self.nonce_expire)
        {
            NonceCheck::Foreign => failed,
            NonceCheck::Stale => AuthOutcome::Stale,
            NonceCheck::Fresh => {
                if self.replays.admit(&c.nonce, nc, secs, self.nonce_expire) {
                    AuthOutcome::Ok
                } else {
                    AuthOutcome::Replay
                }
            }
        }
    }

    fn challenge(&mut self, msg: &Message, target: Target, now: Duration, stale: bool) -> Verdict {
        let (status, reason, header) = match target {
            Target::Local => (401, "Unauthorized", "WWW-Authenticate"),
            Target::Relayed => (407, "Proxy Authentication Required", "Proxy-Authenticate"),
        };
        let mut reply = self.reply(msg, status, reason);
        let nonce = self.key.nonce(&self.realm, now.as_secs(), self.next_nonce);
        self.next_nonce = self.next_nonce.wrapping_add(1);
        for algorithm in &self.algorithms {
            let stale = if stale { ", stale=true" } else { "" };
            reply.append_header(
                header,
                &format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", opaque=\"{}\", algorithm={}, qop=\"auth\"{stale}",
                    self.realm,
                    self.opaque,
                    algorithm.name()
                ),
            );
        }
        Verdict::Challenge(Box::new(reply))
    }

    fn reply(&self, msg: &Message, status: u16, reason: &str) -> Message {
        msg.response(status, reason, Some(&self.reply_tag))
    }

    /// Removes the credentials for our realm (Kamailio's `consume_credentials`), so the
    /// password's digest does not travel on; credentials for other realms stay.
    pub fn consume_credentials(&self, msg: &mut Message) {
        for name in ["Proxy-Authorization", "Authorization"] {
            let values: Vec<String> = msg.headers(name).map(str::to_owned).collect();
            if values.is_empty() {
                continue;
            }
            let keep: Vec<&String> = values
                .iter()
                .filter(|v| Credentials::parse(v).map_or(true, |c| c.realm != self.realm))
                .collect();
            if keep.len() == values.len() {
                continue;
            }
            msg.remove_header(name);
            for value in keep {
                msg.append_header(name, value);
            }
        }
    }
}

#[cfg(test)]
mod tests;
