//! Server-side HTTP digest for SIP (RFC 2617, RFC 8760 SHA-256, qop=auth): self-checking
//! nonces bound to a host secret, credentials parsing, response check, `nc` replay table.

use std::collections::{HashSet, VecDeque};

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

/// A digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// `MD5` / `SHA-256`, case-insensitive.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        if name.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if name.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// The name as written in challenges.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Lower-case hex digest of `data`.
    pub fn hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data)),
            Algorithm::Sha256 => hex(&Sha256::digest(data)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// `H(username:realm:password)`.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hex(format!("{username}:{realm}:{password}").as_bytes())
}

/// The request-digest of RFC 2617 §3.2.2.1 for qop=auth:
/// `H(HA1:nonce:nc:cnonce:qop:H(method:uri))`.
pub fn response_qop_auth(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = algorithm.hex(format!("{method}:{uri}").as_bytes());
    algorithm.hex(format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}").as_bytes())
}

/// The host secret nonces and opaque values are bound to.
#[derive(Clone)]
pub struct NonceKey {
    key: Vec<u8>,
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// Length of the HMAC tag in a nonce, in bytes (128 bits).
const TAG_BYTES: usize = 16;

/// What a presented nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Ours and younger than the expiry.
    Fresh,
    /// Ours but older than the expiry: the client should retry with a new one.
    Stale,
    /// Not issued by this key (forged, garbled, or issued in the future).
    Foreign,
}

impl NonceKey {
    pub fn new(key: &[u8]) -> NonceKey {
        NonceKey { key: key.to_vec() }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// A nonce issued at `now_secs` (Unix time) for `realm`: 16 hex digits of the issue
    /// time, 16 of `serial` (unique per challenge, so two clients challenged in the same
    /// second do not share a nonce and its nc values), then 32 of
    /// HMAC-SHA-256(secret, time, serial, realm). Checkable without a table.
    pub fn nonce(&self, realm: &str, now_secs: u64, serial: u64) -> String {
        let time = now_secs.to_be_bytes();
        let serial = serial.to_be_bytes();
        let tag = self.mac(&[b"nonce", &time, &serial, realm.as_bytes()]);
        format!("{}{}{}", hex(&time), hex(&serial), hex(&tag[..TAG_BYTES]))
    }

    /// Checks a nonce presented back at `now_secs`.
    pub fn check(&self, nonce: &str, realm: &str, now_secs: u64, expire_secs: u64) -> NonceCheck {
        if nonce.len() != 32 + 2 * TAG_BYTES || !nonce.is_ascii() {
            return NonceCheck::Foreign;
        }
        let (Ok(issued), Ok(serial)) = (
            u64::from_str_radix(&nonce[..16], 16),
            u64::from_str_radix(&nonce[16..32], 16),
        ) else {
            return NonceCheck::Foreign;
        };
        if issued > now_secs {
            return NonceCheck::Foreign;
        }
        let expected = self.nonce(realm, issued, serial);
        if !constant_time_eq(expected.as_bytes(), nonce.to_ascii_lowercase().as_bytes()) {
            return NonceCheck::Foreign;
        }
        if now_secs - issued > expire_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh
        }
    }

    /// The `opaque` of `realm`'s challenges: fixed per key, returned by clients unchanged.
    pub fn opaque(&self, realm: &str) -> String {
        hex(&self.mac(&[b"opaque", realm.as_bytes()])[..8])
    }

    /// A To-tag for our own stateless refusals, so their ACK is recognised and absorbed.
    pub fn reply_tag(&self) -> String {
        format!("acc{}", hex(&self.mac(&[b"reply-tag"])[..6]))
    }
}

/// Whether `a` and `b` are equal, taking time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The fields of an `Authorization` / `Proxy-Authorization: Digest ...` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
}

/// Why a credentials header is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("not a Digest credential")]
    NotDigest,
    #[error("malformed parameter list")]
    Syntax,
    #[error("missing parameter {0}")]
    Missing(&'static str),
}

impl Credentials {
    /// Parses `Digest name=value, name="quoted \" value", ...`.
    pub fn parse(value: &str) -> Result<Credentials, CredentialsError> {
        let value = value.trim_start();
        let scheme_end = value
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(value.len());
        if !value[..scheme_end].eq_ignore_ascii_case("Digest") {
            return Err(CredentialsError::NotDigest);
        }
        let mut creds = Credentials::default();
        let (mut username, mut realm, mut nonce, mut uri, mut response) =
            (None, None, None, None, None);
        for (name, value) in Params::new(&value[scheme_end..]) {
            let value = value?;
            let slot = match name.to_ascii_lowercase().as_str() {
                "username" => &mut username,
                "realm" => &mut realm,
                "nonce" => &mut nonce,
                "uri" => &mut uri,
                "response" => &mut response,
                "algorithm" => &mut creds.algorithm,
                "qop" => &mut creds.qop,
                "nc" => &mut creds.nc,
                "cnonce" => &mut creds.cnonce,
                "opaque" => &mut creds.opaque,
                _ => continue,
            };
            *slot = Some(value);
        }
        creds.username = username.ok_or(CredentialsError::Missing("username"))?;
        creds.realm = realm.ok_or(CredentialsError::Missing("realm"))?;
        creds.nonce = nonce.ok_or(CredentialsError::Missing("nonce"))?;
        creds.uri = uri.ok_or(CredentialsError::Missing("uri"))?;
        creds.response = response.ok_or(CredentialsError::Missing("response"))?;
        Ok(creds)
    }
}

/// Iterator over `name=value` pairs separated by commas; values may be quoted.
struct Params<'a> {
    rest: &'a str,
}

impl<'a> Params<'a> {
    fn new(rest: &'a str) -> Params<'a> {
        Params { rest }
    }
}

impl Iterator for Params<'_> {
    type Item = (String, Result<String, CredentialsError>);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self
            .rest
            .trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
        if rest.is_empty() {
            return None;
        }
        let Some(eq) = rest.find('=') else {
            self.rest = "";
            return Some((rest.trim().to_owned(), Err(CredentialsError::Syntax)));
        };
        let name = rest[..eq].trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        self.rest = &quoted[i + 1..];
                        return Some((name, Ok(value)));
                    }
                    '\\' => match chars.next() {
                        Some((_, escaped)) => value.push(escaped),
                        None => break,
                    },
                    c => value.push(c),
                }
            }
            self.rest = "";
            Some((name, Err(CredentialsError::Syntax)))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            self.rest = &after[end..];
            Some((name, Ok(after[..end].trim().to_owned())))
        }
    }
}

/// The (nonce, nc) pairs accepted recently, so a captured request cannot be sent again.
/// Bounded: beyond `capacity` the oldest pair is forgotten; pairs older than the nonce
/// expiry are forgotten anyway, since their nonce is refused as stale.
#[derive(Debug)]
pub struct ReplayTable {
    seen: HashSet<(String, u32)>,
    order: VecDeque<(u64, String, u32)>,
    capacity: usize,
}

impl ReplayTable {
    pub fn new(capacity: usize) -> ReplayTable {
        ReplayTable {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records (nonce, nc) at `now_secs`; false if it was seen already (a replay).
    pub fn admit(&mut self, nonce: &str, nc: u32, now_secs: u64, expire_secs: u64) -> bool {
        while let Some((at, ..)) = self.order.front() {
            if now_secs.saturating_sub(*at) <= expire_secs && self.order.len() < self.capacity {
                break;
            }
            if let Some((_, n, c)) = self.order.pop_front() {
                self.seen.remove(&(n, c));
            }
        }
        if !self.seen.insert((nonce.to_owned(), nc)) {
            return false;
        }
        self.order.push_back((now_secs, nonce.to_owned(), nc));
        true
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5: Mufasa / "Circle Of Life" at testrealm@host.com, GET /dir/index.html.
    #[test]
    fn rfc2617_example_response() {
        let ha1 = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let response = response_qop_auth(
            Algorithm::Md5,
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
            "GET",
            "/dir/index.html",
        );
        assert_eq!(response, "6629fae49393a05397450978507c4ef1");
    }

    /// RFC 7616 §3.9.1: the same exchange with SHA-256 and password "Circle of Life".
    #[test]
    fn rfc7616_sha256_response() {
        let ha1 = ha1(
            Algorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        let response = response_qop_auth(
            Algorithm::Sha256,
            &ha1,
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "00000001",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            "GET",
            "/dir/index.html",
        );
        assert_eq!(
            response,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn nonces_carry_time_and_are_bound_to_the_key() {
        let key = NonceKey::new(b"fixed secret");
        let nonce = key.nonce("acme", 1_000, 5);
        assert_eq!(nonce.len(), 64);
        assert!(nonce.starts_with("00000000000003e80000000000000005"));
        assert_ne!(
            nonce,
            key.nonce("acme", 1_000, 6),
            "serial makes nonces unique"
        );
        assert_eq!(key.check(&nonce, "acme", 1_000, 30), NonceCheck::Fresh);
        assert_eq!(key.check(&nonce, "acme", 1_030, 30), NonceCheck::Fresh);
        assert_eq!(key.check(&nonce, "acme", 1_031, 30), NonceCheck::Stale);
        assert_eq!(key.check(&nonce, "other", 1_000, 30), NonceCheck::Foreign);
        assert_eq!(key.check(&nonce, "acme", 999, 30), NonceCheck::Foreign);
        let other = NonceKey::new(b"another secret");
        assert_eq!(other.check(&nonce, "acme", 1_000, 30), NonceCheck::Foreign);
        // Moving the issue time forward breaks the tag.
        let forged = format!("00000000000003e9{}", &nonce[16..]);
        assert_eq!(key.check(&forged, "acme", 1_010, 30), NonceCheck::Foreign);
        let reserialed = format!("{}0000000000000006{}", &nonce[..16], &nonce[32..]);
        assert_eq!(
            key.check(&reserialed, "acme", 1_010, 30),
            NonceCheck::Foreign
        );
        assert_eq!(key.check(&forged, "acme", 1_010, 30), NonceCheck::Foreign);
        assert_eq!(key.check("short", "acme", 1_000, 30), NonceCheck::Foreign);
        assert_eq!(key.opaque("acme"), key.opaque("acme"));
        assert_ne!(key.opaque("acme"), other.opaque("acme"));
    }

    #[test]
    fn credentials_parse_quoted_and_plain_values() {
        let creds = Credentials::parse(
            "Digest username=\"al\\\"ice\", realm=\"a, b\",nonce=\"n\", uri=\"sip:x@y\", \
             response=\"r\", algorithm=MD5, cnonce=\"c\", nc=00000001, qop=auth, opaque=\"o\"",
        )
        .expect("parse");
        assert_eq!(creds.username, "al\"ice");
        assert_eq!(creds.realm, "a, b");
        assert_eq!(creds.nc.as_deref(), Some("00000001"));
        assert_eq!(creds.qop.as_deref(), Some("auth"));
        assert_eq!(creds.algorithm.as_deref(), Some("MD5"));
        assert_eq!(
            Credentials::parse("Basic QWxhZGRpbjpvcGVu"),
            Err(CredentialsError::NotDigest)
        );
        assert_eq!(
            Credentials::parse("Digest username=\"a\", realm=\"r\""),
            Err(CredentialsError::Missing("nonce"))
        );
        assert_eq!(
            Credentials::parse("Digest username=\"a"),
            Err(CredentialsError::Syntax)
        );
    }

    #[test]
    fn replay_table_refuses_repeats_and_stays_bounded() {
        let mut table = ReplayTable::new(3);
        assert!(table.admit("n1", 1, 100, 30));
        assert!(!table.admit("n1", 1, 101, 30), "same nonce and nc");
        assert!(table.admit("n1", 2, 101, 30));
        assert!(table.admit("n2", 1, 102, 30));
        assert!(table.admit("n3", 1, 103, 30));
        assert_eq!(table.len(), 3);
        // Entries older than the expiry go first.
        assert!(table.admit("n4", 1, 200, 30));
        assert_eq!(table.len(), 1);
    }
}
