//! `[tenant.access]`: which endpoints may send through a tenant, how they are recognised
//! and authenticated, and how hard unidentified or failing sources are throttled.

use std::collections::HashSet;

use serde::Deserialize;

use super::digest::Algorithm;
use super::network::Network;
use crate::registrations::config::validate_table_name;
use crate::registrations::{DbUrl, RegistrationsConfig};
use crate::runtime::config::TenantConfig;

/// A tenant's access policy. Endpoints are tried in this order: by source address, by
/// From user@domain, by an authenticated digest username.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// Digest realm of the challenges; the tenant's name when not set.
    #[serde(default)]
    pub realm: Option<String>,
    /// Seconds a nonce is accepted; an older one is answered with `stale=true`.
    #[serde(default = "default_nonce_expire")]
    pub nonce_expire: u64,
    /// What an unidentified request gets: `"403"` (a 403 Forbidden) or `"drop"` (nothing).
    #[serde(default)]
    pub unidentified: Unidentified,
    /// Key of the nonce HMAC. Set it to keep nonces valid across restarts; a random key
    /// per process otherwise.
    #[serde(default)]
    pub secret: Option<String>,
    /// Digest algorithms offered, one challenge header each, in this order
    /// (`"MD5"`, `"SHA-256"`). Default `["MD5"]`, the one every SIP client speaks.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Token buckets per source address for unidentified and failed requests.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
    /// The tenant's endpoints.
    #[serde(default)]
    pub endpoint: Vec<EndpointConfig>,
    /// More endpoints identified by digest username, from a database table.
    #[serde(default)]
    pub credentials: Option<CredentialsTableConfig>,
}

/// `[tenant.access.credentials]`: digest credentials from a table with the columns
/// `username`, `password`, `ha1`, `ha1_sha256`, `endpoint` (see `access::table`). Each
/// row is an endpoint identified by its username that must authenticate; a username of
/// a `[[tenant.access.endpoint]]` wins over a row.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsTableConfig {
    /// The table's name (a plain SQL identifier).
    pub table: String,
    /// Its database; the tenant's store (`[tenant.registrations].db_url`) when not set.
    #[serde(default)]
    pub db_url: Option<String>,
    /// Seconds between re-reads of the table; 0 reads it once, at start.
    #[serde(default = "default_reload_s")]
    pub reload_s: u64,
}

impl CredentialsTableConfig {
    /// The database URL: its own, else the tenant's registration store's.
    pub fn db_url<'a>(&'a self, registrations: Option<&'a RegistrationsConfig>) -> Option<&'a str> {
        self.db_url
            .as_deref()
            .or(registrations.map(|r| r.db_url.as_str()))
    }

    fn validate(&self) -> Result<(), AccessConfigError> {
        validate_table_name(&self.table).map_err(|why| fail("access.credentials.table", why))?;
        if let Some(url) = &self.db_url {
            DbUrl::parse(url).map_err(|e| fail("access.credentials.db_url", e.to_string()))?;
        }
        Ok(())
    }
}

fn default_reload_s() -> u64 {
    60
}

/// One endpoint: who it is (any of `source`, `from`, `username`) and whether it must
/// authenticate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Name given to filters and rules as the identified endpoint.
    pub name: String,
    /// Source networks in CIDR form (`"10.0.0.0/8"`, `"2001:db8::/32"`; a bare address
    /// is a /32 or /128).
    #[serde(default)]
    pub source: Vec<String>,
    /// From URIs as `user@domain` (user case-sensitive, domain not). The From header is
    /// chosen by the sender, so combine it with `auth = true`.
    #[serde(default)]
    pub from: Vec<String>,
    /// Digest username. An endpoint with a username is also identified by it.
    #[serde(default)]
    pub username: Option<String>,
    /// Plain password of `username`.
    #[serde(default)]
    pub password: Option<String>,
    /// MD5 HA1 (`MD5(username:realm:password)`, hex) instead of a password.
    #[serde(default)]
    pub ha1: Option<String>,
    /// SHA-256 HA1, hex, instead of a password.
    #[serde(default)]
    pub ha1_sha256: Option<String>,
    /// Requests identified by source or From must also pass a digest challenge.
    #[serde(default)]
    pub auth: bool,
}

/// Rate limit of one source address: `rate` requests per second on average, bursts of
/// up to `burst`, for at most `table_size` addresses at once.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    #[serde(default = "default_rate")]
    pub rate: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
    #[serde(default = "default_table_size")]
    pub table_size: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            rate: default_rate(),
            burst: default_burst(),
            table_size: default_table_size(),
        }
    }
}

/// What becomes of a request no endpoint claims.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Unidentified {
    /// Answered 403 Forbidden.
    #[default]
    #[serde(rename = "403")]
    Forbidden,
    /// Dropped without an answer, so scanners learn nothing.
    #[serde(rename = "drop")]
    Drop,
}

fn default_nonce_expire() -> u64 {
    30
}

fn default_algorithms() -> Vec<String> {
    vec!["MD5".to_owned()]
}

fn default_rate() -> f64 {
    5.0
}

fn default_burst() -> u32 {
    20
}

fn default_table_size() -> usize {
    4096
}

/// A config error: the key below `[tenant.access]` and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {why}")]
pub struct AccessConfigError {
    pub key: String,
    pub why: String,
}

fn fail(key: impl Into<String>, why: impl Into<String>) -> AccessConfigError {
    AccessConfigError {
        key: key.into(),
        why: why.into(),
    }
}

impl AccessConfig {
    /// The offered algorithms, parsed.
    pub fn parsed_algorithms(&self) -> Result<Vec<Algorithm>, AccessConfigError> {
        self.algorithms
            .iter()
            .enumerate()
            .map(|(i, name)| {
                Algorithm::from_name(name).ok_or_else(|| {
                    fail(
                        format!("access.algorithms[{i}]"),
                        format!("{name:?} is not a supported algorithm (MD5, SHA-256)"),
                    )
                })
            })
            .collect()
    }

    /// Checks every key; errors name it relative to the tenant (`access.endpoint[0].source[1]`).
    pub fn validate(&self) -> Result<(), AccessConfigError> {
        if self
            .realm
            .as_deref()
            .is_some_and(|r| r.is_empty() || r.contains('"'))
        {
            return Err(fail("access.realm", "must be non-empty and without '\"'"));
        }
        if self.nonce_expire == 0 {
            return Err(fail("access.nonce_expire", "must be at least 1 second"));
        }
        if self.secret.as_deref().is_some_and(str::is_empty) {
            return Err(fail("access.secret", "must not be empty when set"));
        }
        let algorithms = self.parsed_algorithms()?;
        if algorithms.is_empty() {
            return Err(fail(
                "access.algorithms",
                "must name at least one algorithm",
            ));
        }
        let limit = &self.rate_limit;
        if !(limit.rate.is_finite() && limit.rate > 0.0) {
            return Err(fail("access.rate_limit.rate", "must be a number above 0"));
        }
        if limit.burst == 0 {
            return Err(fail("access.rate_limit.burst", "must be at least 1"));
        }
        if limit.table_size == 0 {
            return Err(fail("access.rate_limit.table_size", "must be at least 1"));
        }
        if let Some(credentials) = &self.credentials {
            credentials.validate()?;
        }
        let mut names = HashSet::new();
        let mut usernames = HashSet::new();
        for (i, endpoint) in self.endpoint.iter().enumerate() {
            let at = format!("access.endpoint[{i}]");
            endpoint.validate(&at, &algorithms)?;
            if !names.insert(endpoint.name.as_str()) {
                return Err(fail(
                    format!("{at}.name"),
                    format!("duplicate endpoint {:?}", endpoint.name),
                ));
            }
            if let Some(user) = &endpoint.username
                && !usernames.insert(user.as_str())
            {
                return Err(fail(
                    format!("{at}.username"),
                    format!("{user:?} already belongs to another endpoint"),
                ));
            }
        }
        Ok(())
    }
}

impl EndpointConfig {
    fn validate(&self, at: &str, algorithms: &[Algorithm]) -> Result<(), AccessConfigError> {
        if self.name.trim().is_empty() {
            return Err(fail(format!("{at}.name"), "must not be empty"));
        }
        for (j, net) in self.source.iter().enumerate() {
            Network::parse(net).map_err(|e| fail(format!("{at}.source[{j}]"), e.to_string()))?;
        }
        for (j, from) in self.from.iter().enumerate() {
            let ok = from
                .split_once('@')
                .is_some_and(|(u, d)| !u.is_empty() && !d.is_empty() && !d.contains('@'));
            if !ok {
                return Err(fail(
                    format!("{at}.from[{j}]"),
                    format!("{from:?} is not user@domain"),
                ));
            }
        }
        if self.source.is_empty() && self.from.is_empty() && self.username.is_none() {
            return Err(fail(
                at,
                "identifies nothing: give source, from or username",
            ));
        }
        if self.username.as_deref().is_some_and(str::is_empty) {
            return Err(fail(format!("{at}.username"), "must not be empty"));
        }
        let secrets = [&self.password, &self.ha1, &self.ha1_sha256]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if self.username.is_some() && secrets == 0 {
            return Err(fail(
                format!("{at}.username"),
                "needs password, ha1 or ha1_sha256",
            ));
        }
        if self.username.is_none() && secrets > 0 {
            return Err(fail(
                format!("{at}.username"),
                "must be set when a password or HA1 is given",
            ));
        }
        if self.auth && self.username.is_none() {
            return Err(fail(
                format!("{at}.auth"),
                "auth = true needs username and password (or ha1)",
            ));
        }
        if self.password.is_some() && (self.ha1.is_some() || self.ha1_sha256.is_some()) {
            return Err(fail(
                format!("{at}.password"),
                "give either password or HA1, not both",
            ));
        }
        for (key, value, len) in [("ha1", &self.ha1, 32), ("ha1_sha256", &self.ha1_sha256, 64)] {
            if let Some(hex) = value
                && (hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(fail(
                    format!("{at}.{key}"),
                    format!("must be {len} hex digits"),
                ));
            }
        }
        if self.password.is_none() && self.username.is_some() {
            let usable = algorithms.iter().any(|a| match a {
                Algorithm::Md5 => self.ha1.is_some(),
                Algorithm::Sha256 => self.ha1_sha256.is_some(),
            });
            if !usable {
                return Err(fail(
                    format!("{at}.username"),
                    "has no HA1 for any of access.algorithms",
                ));
            }
        }
        Ok(())
    }
}

/// `siphost check`'s rule: a tenant whose filters hold credentials (a filter config with a
/// `credential` key, or `[tenant.registrations]`, passed as `has_registrations`) must
/// identify its endpoints, or anyone could send calls out on its trunk.
pub fn check_tenant_identification(
    tenant: &TenantConfig,
    has_registrations: bool,
) -> Result<(), AccessConfigError> {
    if let Some(credentials) = tenant.access.as_ref().and_then(|a| a.credentials.as_ref())
        && credentials.db_url(tenant.registrations.as_ref()).is_none()
    {
        return Err(fail(
            "access.credentials.db_url",
            "not set, and the tenant has no [tenant.registrations] db_url to share",
        ));
    }
    let identifies = tenant
        .access
        .as_ref()
        .is_some_and(|access| !access.endpoint.is_empty() || access.credentials.is_some());
    if identifies {
        return Ok(());
    }
    let credential_filter = tenant
        .filter
        .iter()
        .position(|f| f.config.contains_key("credential"));
    let holder = match (credential_filter, has_registrations) {
        (Some(j), _) => format!("filter[{j}].config.credential"),
        (None, true) => "registrations".to_owned(),
        (None, false) => return Ok(()),
    };
    Err(fail(
        "access.endpoint",
        format!(
            "tenant {:?} holds trunk credentials ({holder}) but identifies no endpoint: \
             anyone could send calls out with them; add [[tenant.access.endpoint]] \
             (e.g. source = [\"127.0.0.1/32\"])",
            tenant.name
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(text: &str) -> Result<AccessConfig, String> {
        let config: AccessConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn defaults_and_a_full_endpoint() {
        let config = access(
            r#"
            unidentified = "drop"
            [[endpoint]]
            name = "pbx"
            source = ["127.0.0.1/32", "::1"]
            from = ["alice@example.com"]
            username = "alice"
            password = "secret"
            auth = true
            "#,
        )
        .expect("valid");
        assert_eq!(config.nonce_expire, 30);
        assert_eq!(config.unidentified, Unidentified::Drop);
        assert_eq!(config.parsed_algorithms(), Ok(vec![Algorithm::Md5]));
        assert_eq!(config.rate_limit.burst, 20);
        assert!(config.endpoint[0].auth);
    }

    #[test]
    fn errors_name_the_key_and_why() {
        let cases = [
            ("unidentified = \"404\"", "unknown variant"),
            (
                "nonce_expire = 0",
                "access.nonce_expire: must be at least 1",
            ),
            (
                "algorithms = [\"SHA-512\"]",
                "access.algorithms[0]: \"SHA-512\"",
            ),
            ("[rate_limit]\nrate = 0.0", "access.rate_limit.rate"),
            (
                "[[endpoint]]\nname = \"a\"\nsource = [\"10.0.0.0/33\"]",
                "access.endpoint[0].source[0]: ",
            ),
            (
                "[[endpoint]]\nname = \"a\"\nfrom = [\"alice\"]",
                "access.endpoint[0].from[0]: \"alice\" is not user@domain",
            ),
            (
                "[[endpoint]]\nname = \"a\"",
                "access.endpoint[0]: identifies nothing",
            ),
            (
                "[[endpoint]]\nname = \"a\"\nsource = [\"::1\"]\nauth = true",
                "access.endpoint[0].auth: auth = true needs username",
            ),
            (
                "[[endpoint]]\nname = \"a\"\nusername = \"u\"",
                "access.endpoint[0].username: needs password",
            ),
            (
                "[[endpoint]]\nname = \"a\"\nusername = \"u\"\nha1 = \"xyz\"",
                "access.endpoint[0].ha1: must be 32 hex digits",
            ),
            (
                "[[endpoint]]\nname = \"a\"\nusername = \"u\"\nha1_sha256 = \"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"",
                "access.endpoint[0].username: has no HA1 for any of access.algorithms",
            ),
            (
                "[[endpoint]]\nname = \"a\"\nsource = [\"::1\"]\n[[endpoint]]\nname = \"a\"\nsource = [\"::2\"]",
                "access.endpoint[1].name: duplicate endpoint",
            ),
            (
                "[credentials]\ntable = \"drop table\"",
                "access.credentials.table: \"drop table\" is not a plain SQL identifier",
            ),
            (
                "[credentials]\ntable = \"t\"\ndb_url = \"ftp://x\"",
                "access.credentials.db_url: unsupported scheme",
            ),
            (
                "[credentials]\ndb_url = \"sqlite:///x\"",
                "missing field `table`",
            ),
        ];
        for (text, expected) in cases {
            let err = access(text).expect_err(text);
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn every_example_identifies_its_endpoints() {
        for (name, text) in [
            ("proxy.toml", include_str!("../../../examples/proxy.toml")),
            ("uac.toml", include_str!("../../../examples/uac.toml")),
            (
                "remote-registration.toml",
                include_str!("../../../examples/remote-registration.toml"),
            ),
            (
                "anonymize.toml",
                include_str!("../../../examples/anonymize.toml"),
            ),
            ("notify.toml", include_str!("../../../examples/notify.toml")),
            (
                "proxy-wasm.toml",
                include_str!("../../../examples/proxy-wasm.toml"),
            ),
            (
                "trunk-auth.toml",
                include_str!("../../../examples/trunk-auth.toml"),
            ),
        ] {
            let config = crate::config::Config::parse(text).expect(name);
            assert!(!config.tenant.is_empty(), "{name} has no tenant");
            for tenant in &config.tenant {
                let access = tenant.access.as_ref().expect("access section");
                let local = "127.0.0.1".parse().expect("ip");
                let other = "127.0.0.2".parse().expect("ip");
                let claims = |ip| {
                    access.endpoint.iter().any(|e| {
                        e.source
                            .iter()
                            .any(|n| Network::parse(n).is_ok_and(|n| n.contains(ip)))
                    })
                };
                assert!(claims(local) && !claims(other), "{name}: {}", tenant.name);
            }
        }
    }

    fn tenant(text: &str) -> TenantConfig {
        toml::from_str(text).expect("tenant")
    }

    #[test]
    fn credentials_without_identification_fail_the_check() {
        let holder = tenant(
            "name = \"acme\"\n[[filter]]\npath = \"uac.wasm\"\nconfig = { credential = [] }\n",
        );
        let err = check_tenant_identification(&holder, false).expect_err("no identification");
        assert_eq!(err.key, "access.endpoint");
        assert!(err.why.contains("filter[0].config.credential"), "{err}");
        let registrations = tenant("name = \"acme\"\n");
        assert!(check_tenant_identification(&registrations, true).is_err());
        assert!(check_tenant_identification(&registrations, false).is_ok());
        let identified = tenant(
            "name = \"acme\"\n[[filter]]\npath = \"uac.wasm\"\nconfig = { credential = [] }\n\
             [[access.endpoint]]\nname = \"pbx\"\nsource = [\"127.0.0.1/32\"]\n",
        );
        assert!(check_tenant_identification(&identified, true).is_ok());
    }
}
