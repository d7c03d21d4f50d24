//! The host configuration (TOML): listeners, timers, routing, tenants.
//! Parsing names the offending key path in every error; validation checks what serde cannot.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use siphost_sip::Uri;

/// A configuration problem: the key path (`proxy.route[1].next_hop`) and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub listen: Vec<ListenConfig>,
    #[serde(default)]
    pub transaction: TransactionConfig,
    #[serde(default)]
    pub tcp: TcpConfig,
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub process: ProcessConfig,
    #[serde(default)]
    pub tenant: Vec<crate::runtime::config::TenantConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter directive (`info`, `siphost=debug`); `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `human` (default) or `json` (one JSON object per line).
    #[serde(default)]
    pub format: LogFormat,
    /// Level per module: `[log.targets] "siphost::proxy" = "debug"`.
    #[serde(default)]
    pub targets: std::collections::BTreeMap<String, String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: default_log_level(),
            format: LogFormat::default(),
            targets: Default::default(),
        }
    }
}

impl LogConfig {
    /// `level` and the per-target levels as one tracing filter directive.
    pub fn directives(&self) -> String {
        let mut out = self.level.clone();
        for (target, level) in &self.targets {
            out.push_str(&format!(",{target}={level}"));
        }
        out
    }

    fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::builder()
            .parse(&self.level)
            .map_err(|e| ConfigError::new("log.level", format!("not a log filter: {e}")))?;
        for (target, level) in &self.targets {
            let key = format!("log.targets.{target}");
            let is_module_path = !target.is_empty()
                && target.split("::").all(|part| {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                });
            if !is_module_path {
                return Err(ConfigError::new(
                    key,
                    "not a module path (like siphost::proxy)",
                ));
            }
            if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                return Err(ConfigError::new(
                    key,
                    format!("{level:?} is not one of {}", LOG_LEVELS.join(", ")),
                ));
            }
        }
        Ok(())
    }
}

const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// SIP transport of a listener or next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Udp,
    Tcp,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Udp => "udp",
            TransportKind::Tcp => "tcp",
        }
    }

    /// Uppercase name used in Via headers (`SIP/2.0/UDP`).
    pub fn via_name(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
        }
    }

    pub fn is_reliable(self) -> bool {
        matches!(self, TransportKind::Tcp)
    }

    /// Parses a transport name case-insensitively (`udp`, `TCP`).
    pub fn parse(name: &str) -> Option<TransportKind> {
        if name.eq_ignore_ascii_case("udp") {
            Some(TransportKind::Udp)
        } else if name.eq_ignore_ascii_case("tcp") {
            Some(TransportKind::Tcp)
        } else {
            None
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[listen]]` socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    pub transport: TransportKind,
    pub address: SocketAddr,
    /// Host written in Via and Record-Route instead of the socket's IP.
    #[serde(default)]
    pub advertise: Option<String>,
}

impl ListenConfig {
    /// The `transport:ip:port` name tenants use to claim this socket.
    pub fn name(&self) -> String {
        format!("{}:{}", self.transport, self.address)
    }
}

/// RFC 3261 timer values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionConfig {
    #[serde(default = "default_t1")]
    pub t1_ms: u64,
    #[serde(default = "default_t2")]
    pub t2_ms: u64,
    #[serde(default = "default_t4")]
    pub t4_ms: u64,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            t1_ms: default_t1(),
            t2_ms: default_t2(),
            t4_ms: default_t4(),
        }
    }
}

fn default_t1() -> u64 {
    500
}
fn default_t2() -> u64 {
    4000
}
fn default_t4() -> u64 {
    5000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConfig {
    /// A connection with no traffic either way for this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Accepted plus outgoing connections; new ones beyond it are refused.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Messages one connection may have waiting to be written; a peer that stops reading
    /// and lets more pile up is disconnected.
    #[serde(default = "default_write_queue")]
    pub write_queue: usize,
}

impl Default for TcpConfig {
    fn default() -> Self {
        Self {
            idle_timeout_ms: default_idle_timeout(),
            max_connections: default_max_connections(),
            write_queue: default_write_queue(),
        }
    }
}

fn default_idle_timeout() -> u64 {
    300_000
}
fn default_max_connections() -> usize {
    4096
}
fn default_write_queue() -> usize {
    1024
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default)]
    pub record_route: bool,
    /// Max-Forwards added to requests that carry none.
    #[serde(default = "default_max_forwards")]
    pub max_forwards: u32,
    /// Next hop (SIP URI) for requests no rule matches whose R-URI is this proxy.
    #[serde(default)]
    pub default_route: Option<String>,
    #[serde(default)]
    pub route: Vec<RouteRule>,
    /// Shards of the proxy core (each its own transaction tables and timers, calls placed
    /// by Call-ID); default the number of cores.
    #[serde(default = "default_shards")]
    pub shards: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            record_route: false,
            max_forwards: default_max_forwards(),
            default_route: None,
            route: Vec::new(),
            shards: default_shards(),
        }
    }
}

fn default_max_forwards() -> u32 {
    70
}

fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(crate::proxy::MAX_SHARDS))
}

/// A static routing rule; every given condition must match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub ruri_user_prefix: Option<String>,
    #[serde(default)]
    pub ruri_domain: Option<String>,
    pub next_hop: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// JSON-RPC over HTTP endpoint; none when absent.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Bearer token for `/RPC` and `/metrics`; required when `listen` is not loopback.
    #[serde(default)]
    pub token: Option<AdminToken>,
}

/// The admin bearer token. Its `Debug` never shows it, so it cannot reach a log.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct AdminToken(String);

/// Fewer characters than this make a token guessable.
const MIN_TOKEN_LEN: usize = 16;

impl AdminToken {
    /// Whether an `Authorization` header value carries this token (`Bearer <token>`),
    /// compared in time independent of where they differ.
    pub fn accepts(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(|h| {
            let (scheme, rest) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest.trim())
        }) else {
            return false;
        };
        let (a, b) = (given.as_bytes(), self.0.as_bytes());
        let differ = a
            .iter()
            .zip(b)
            .fold(u8::from(a.len() != b.len()), |acc, (x, y)| acc | (x ^ y));
        differ == 0
    }

    /// The token itself, for a client to send.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AdminToken {
    type Error = String;
    fn try_from(token: String) -> Result<Self, String> {
        if token.chars().count() < MIN_TOKEN_LEN {
            return Err(format!("must be at least {MIN_TOKEN_LEN} characters"));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces".into());
        }
        Ok(Self(token))
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight transactions may take to finish after SIGTERM.
    #[serde(default = "default_grace")]
    pub grace_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace_ms: default_grace(),
        }
    }
}

fn default_grace() -> u64 {
    5000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Tokio worker threads.
    #[serde(default = "default_worker_threads")]
    pub worker_threads: usize,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            worker_threads: default_worker_threads(),
        }
    }
}

fn default_worker_threads() -> usize {
    2
}

impl Config {
    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        Config::parse(&text)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what deserialization cannot: presence, URIs, cross references.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_empty() {
            return Err(ConfigError::new(
                "listen",
                "at least one [[listen]] socket is required",
            ));
        }
        for (i, listen) in self.listen.iter().enumerate() {
            let dup = self.listen[..i]
                .iter()
                .any(|l| l.transport == listen.transport && l.address == listen.address);
            if dup {
                return Err(ConfigError::new(
                    format!("listen[{i}].address"),
                    format!("{} is listed twice", listen.name()),
                ));
            }
            if let Some(host) = &listen.advertise
                && (host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == ';'))
            {
                return Err(ConfigError::new(
                    format!("listen[{i}].advertise"),
                    format!("not a host name: {host:?}"),
                ));
            }
        }
        let t = &self.transaction;
        for (key, value) in [("t1_ms", t.t1_ms), ("t2_ms", t.t2_ms), ("t4_ms", t.t4_ms)] {
            if value == 0 {
                return Err(ConfigError::new(
                    format!("transaction.{key}"),
                    "must be greater than 0",
                ));
            }
        }
        if t.t2_ms < t.t1_ms {
            return Err(ConfigError::new(
                "transaction.t2_ms",
                "must not be smaller than t1_ms",
            ));
        }
        if self.tcp.max_connections == 0 {
            return Err(ConfigError::new(
                "tcp.max_connections",
                "must be greater than 0",
            ));
        }
        if self.tcp.write_queue == 0 {
            return Err(ConfigError::new(
                "tcp.write_queue",
                "must be greater than 0",
            ));
        }
        if self.proxy.max_forwards == 0 || self.proxy.max_forwards > 255 {
            return Err(ConfigError::new(
                "proxy.max_forwards",
                "must be between 1 and 255",
            ));
        }
        if self.proxy.shards == 0 || self.proxy.shards > crate::proxy::MAX_SHARDS {
            return Err(ConfigError::new(
                "proxy.shards",
                format!("must be between 1 and {}", crate::proxy::MAX_SHARDS),
            ));
        }
        if let Some(uri) = &self.proxy.default_route {
            check_next_hop(uri).map_err(|why| ConfigError::new("proxy.default_route", why))?;
        }
        for (i, rule) in self.proxy.route.iter().enumerate() {
            check_next_hop(&rule.next_hop)
                .map_err(|why| ConfigError::new(format!("proxy.route[{i}].next_hop"), why))?;
            if let Some(method) = &rule.method
                && (method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()))
            {
                return Err(ConfigError::new(
                    format!("proxy.route[{i}].method"),
                    format!("not a SIP method: {method:?}"),
                ));
            }
        }
        self.validate_tenants()?;
        self.log.validate()?;
        if let Some(address) = self.admin.listen
            && !address.ip().is_loopback()
            && self.admin.token.is_none()
        {
            return Err(ConfigError::new(
                "admin.token",
                format!("required when admin.listen ({address}) is not a loopback address"),
            ));
        }
        if self.process.worker_threads == 0 {
            return Err(ConfigError::new(
                "process.worker_threads",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_tenants(&self) -> Result<(), ConfigError> {
        use crate::runtime::config::{parse_listen, validate_tenants};
        validate_tenants(&self.tenant).map_err(|e| match e.split_once(": ") {
            Some((key, why)) => ConfigError::new(key, why),
            None => ConfigError::new("tenant", e),
        })?;
        for (i, tenant) in self.tenant.iter().enumerate() {
            for (j, entry) in tenant.listen.iter().enumerate() {
                let key = format!("tenant[{i}].listen[{j}]");
                let (transport, address) =
                    parse_listen(entry).map_err(|why| ConfigError::new(&key, why))?;
                let kind = TransportKind::from(transport);
                let known = self
                    .listen
                    .iter()
                    .any(|l| l.transport == kind && l.address == address);
                if !known {
                    return Err(ConfigError::new(
                        key,
                        format!("{entry:?} is not among the [[listen]] sockets"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Accepts `sip:` URIs with a host and, if given, a transport this host speaks.
pub fn check_next_hop(uri: &str) -> Result<(), String> {
    let parsed = Uri::parse(uri).map_err(|e| format!("not a SIP URI: {uri:?} ({e})"))?;
    if !parsed.scheme.eq_ignore_ascii_case("sip") {
        return Err(format!("not a SIP URI: {uri:?} (scheme must be sip)"));
    }
    if parsed.host.is_empty() {
        return Err(format!("not a SIP URI: {uri:?} (no host)"));
    }
    if let Some(transport) = parsed.param("transport").flatten()
        && TransportKind::parse(transport).is_none()
    {
        return Err(format!("unsupported transport {transport:?} in {uri:?}"));
    }
    Ok(())
}

/// Turns a toml/serde error into one naming the key path, found from the error's span.
fn toml_error(text: &str, err: &toml::de::Error) -> ConfigError {
    let reason = err.message().trim().to_owned();
    let key = err
        .span()
        .and_then(|span| {
            let doc = toml::de::DeTable::parse(text).ok()?;
            let mut path = String::new();
            table_path(doc.get_ref(), span.start, &mut path).then_some(path)
        })
        .unwrap_or_else(|| match err.span() {
            Some(span) => {
                let line = text
                    .get(..span.start)
                    .map_or(0, |before| before.matches('\n').count())
                    + 1;
                format!("line {line}")
            }
            None => "config".to_owned(),
        });
    ConfigError::new(key, reason)
}

/// Depth-first search for the key whose name or value covers byte `at`; array-of-tables
/// spans do not cover their contents, so every branch is searched.
fn table_path(table: &toml::de::DeTable<'_>, at: usize, path: &mut String) -> bool {
    for (key, value) in table.iter() {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        if key.span().contains(&at) || value_path(value, at, path) {
            return true;
        }
        path.truncate(len);
    }
    false
}

fn value_path(value: &toml::Spanned<toml::de::DeValue<'_>>, at: usize, path: &mut String) -> bool {
    match value.get_ref() {
        toml::de::DeValue::Table(table) => table_path(table, at, path),
        toml::de::DeValue::Array(array) => {
            for (i, item) in array.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                if value_path(item, at, path) {
                    return true;
                }
                path.truncate(len);
            }
            false
        }
        _ => value.span().contains(&at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\n";

    fn error(text: &str) -> ConfigError {
        match Config::parse(text) {
            Ok(_) => panic!("config accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../examples/proxy.toml");
        let config = Config::parse(text).expect("examples/proxy.toml parses");
        assert_eq!(config.listen.len(), 2);
        assert!(config.proxy.record_route);
        assert_eq!(
            config.proxy.default_route.as_deref(),
            Some("sip:127.0.0.1:5090")
        );
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let config = Config::parse(MINIMAL).expect("minimal config");
        assert_eq!(config.transaction.t1_ms, 500);
        assert_eq!(config.transaction.t2_ms, 4000);
        assert_eq!(config.transaction.t4_ms, 5000);
        assert_eq!(config.tcp.max_connections, 4096);
        assert_eq!(config.tcp.write_queue, 1024);
        assert_eq!(config.proxy.max_forwards, 70);
        assert!(!config.proxy.record_route);
        assert_eq!(config.shutdown.grace_ms, 5000);
        assert_eq!(config.process.worker_threads, 2);
    }

    #[test]
    fn shards_default_to_the_cores_and_are_bounded() {
        let config = Config::parse(MINIMAL).expect("minimal config");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(config.proxy.shards, cores.min(crate::proxy::MAX_SHARDS));
        for bad in [0, crate::proxy::MAX_SHARDS + 1] {
            let e = error(&format!("{MINIMAL}[proxy]\nshards = {bad}\n"));
            assert_eq!(e.key, "proxy.shards");
        }
        let four = Config::parse(&format!("{MINIMAL}[proxy]\nshards = 4\n")).expect("4 shards");
        assert_eq!(four.proxy.shards, 4);
    }

    #[test]
    fn bad_next_hop_names_the_rule() {
        let text = format!(
            "{MINIMAL}[proxy]\n[[proxy.route]]\nnext_hop = \"sip:127.0.0.1:5090\"\n[[proxy.route]]\nmethod = \"INVITE\"\nnext_hop = \"http://x\"\n"
        );
        let e = error(&text);
        assert_eq!(e.key, "proxy.route[1].next_hop");
        assert!(e.reason.starts_with("not a SIP URI"), "{e}");
        assert!(
            e.to_string()
                .starts_with("proxy.route[1].next_hop: not a SIP URI")
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_path() {
        let e = error(&format!("{MINIMAL}[tcp]\nidle_timeout = 5\n"));
        assert!(e.key.starts_with("tcp"), "{e}");
        assert!(e.reason.contains("unknown field"), "{e}");
        let e =
            error("[[listen]]\ntransport = \"udp\"\naddress = \"127.0.0.1:5060\"\ncolour = 1\n");
        assert!(e.key.starts_with("listen[0]"), "{e}");
    }

    #[test]
    fn bad_values_are_named_with_their_path() {
        let e = error("[[listen]]\ntransport = \"sctp\"\naddress = \"127.0.0.1:5060\"\n");
        assert_eq!(e.key, "listen[0].transport", "{e}");
        let e = error("[[listen]]\ntransport = \"udp\"\naddress = \"localhost\"\n");
        assert_eq!(e.key, "listen[0].address", "{e}");
        let e = error(&format!("{MINIMAL}[transaction]\nt1_ms = \"fast\"\n"));
        assert_eq!(e.key, "transaction.t1_ms", "{e}");
    }

    #[test]
    fn semantic_checks() {
        assert_eq!(error("").key, "listen");
        let e = error(&format!("{MINIMAL}{MINIMAL}"));
        assert_eq!(e.key, "listen[1].address");
        let e = error(&format!("{MINIMAL}[transaction]\nt1_ms = 0\n"));
        assert_eq!(e.key, "transaction.t1_ms");
        let e = error(&format!(
            "{MINIMAL}[transaction]\nt1_ms = 5000\nt2_ms = 4000\n"
        ));
        assert_eq!(e.key, "transaction.t2_ms");
        let e = error(&format!(
            "{MINIMAL}[proxy]\ndefault_route = \"sip:h;transport=sctp\"\n"
        ));
        assert_eq!(e.key, "proxy.default_route");
        let e = error(&format!("{MINIMAL}[tcp]\nmax_connections = 0\n"));
        assert_eq!(e.key, "tcp.max_connections");
    }

    #[test]
    fn admin_token_is_required_off_loopback_and_never_shown() {
        let open = format!("{MINIMAL}[admin]\nlisten = \"0.0.0.0:5081\"\n");
        let e = error(&open);
        assert_eq!(e.key, "admin.token", "{e}");
        assert!(e.reason.contains("not a loopback"), "{e}");
        let short = format!("{open}token = \"short\"\n");
        assert_eq!(error(&short).key, "admin.token");
        let with = format!("{open}token = \"s3cret-admin-token-xyz\"\n");
        let config = Config::parse(&with).expect("token given");
        let token = config.admin.token.as_ref().expect("token");
        assert!(token.accepts(Some("Bearer s3cret-admin-token-xyz")));
        assert!(!token.accepts(Some("Bearer s3cret-admin-token-xy")));
        assert!(!token.accepts(Some("Basic s3cret-admin-token-xyz")));
        assert!(!token.accepts(None));
        assert!(!format!("{config:?}").contains("s3cret"));
        let loopback = format!("{MINIMAL}[admin]\nlisten = \"127.0.0.1:5081\"\n");
        Config::parse(&loopback).expect("loopback needs no token");
    }

    #[test]
    fn log_format_and_per_target_levels() {
        let config = Config::parse(MINIMAL).expect("defaults");
        assert_eq!(config.log.format, LogFormat::Human);
        assert_eq!(config.log.directives(), "info");
        let text = format!(
            "[log]\nlevel = \"warn\"\nformat = \"json\"\n[log.targets]\n\"siphost::proxy\" = \"debug\"\n{MINIMAL}"
        );
        let config = Config::parse(&text).expect("json + targets");
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.directives(), "warn,siphost::proxy=debug");
        let e = error(&format!("[log]\nformat = \"xml\"\n{MINIMAL}"));
        assert_eq!(e.key, "log.format", "{e}");
        let e = error(&format!(
            "[log.targets]\n\"siphost::proxy\" = \"loud\"\n{MINIMAL}"
        ));
        assert_eq!(e.key, "log.targets.siphost::proxy", "{e}");
        let e = error(&format!("[log]\nlevel = \"info,=[\"\n{MINIMAL}"));
        assert_eq!(e.key, "log.level", "{e}");
    }

    #[test]
    fn tenant_listen_must_be_a_listen_socket() {
        let ok =
            format!("{MINIMAL}[[tenant]]\nname = \"acme\"\nlisten = [\"udp:127.0.0.1:5060\"]\n");
        Config::parse(&ok).expect("tenant on a listen socket");
        let e = error(&format!(
            "{MINIMAL}[[tenant]]\nname = \"acme\"\nlisten = [\"tcp:127.0.0.1:5060\"]\n"
        ));
        assert_eq!(e.key, "tenant[0].listen[0]");
        assert!(e.reason.contains("not among the [[listen]]"), "{e}");
    }
}
