//! The Digest computation (HA1, HA2, response) for every supported algorithm and qop,
//! and the Authorization / Proxy-Authorization header value built from it.

use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};
use thiserror::Error;

use super::challenge::is_ctl;
use super::{Algorithm, HashKind};

/// The quality of protection answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qop {
    Auth,
    /// HA2 covers the message body as well (H(entity-body)).
    AuthInt,
}

impl Qop {
    pub fn name(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

/// What the user knows: the password, or HA1 = H(username:realm:password) in hex, as
/// Kamailio's `uac_auth(1)` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret<'a> {
    Password(&'a str),
    Ha1(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ResponseError {
    #[error(
        "HA1 must be {expected} hex digits for {algorithm} (got {got} characters{non_hex})",
        non_hex = if *.hex { "" } else { ", not all hex" }
    )]
    BadHa1 {
        algorithm: &'static str,
        expected: usize,
        got: usize,
        hex: bool,
    },
    #[error("the {field} contains a control character and cannot go into a header")]
    ControlCharacter { field: &'static str },
}

/// Everything the response depends on. `uri` is the Request-URI exactly as sent.
#[derive(Debug, Clone, Copy)]
pub struct DigestInput<'a> {
    pub algorithm: Algorithm,
    pub username: &'a str,
    pub realm: &'a str,
    pub secret: Secret<'a>,
    pub nonce: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    /// `None`: the RFC 2069 answer, response = H(HA1:nonce:HA2).
    pub qop: Option<Qop>,
    /// The nonce count, sent as 8 hex digits.
    pub nc: u32,
    pub cnonce: &'a str,
    /// The body, hashed into HA2 for `auth-int` only.
    pub body: &'a [u8],
}

impl HashKind {
    /// Hex digits of one hash value (and so of an HA1 given directly).
    pub fn hex_len(self) -> usize {
        match self {
            HashKind::Md5 => 32,
            HashKind::Sha256 | HashKind::Sha512_256 => 64,
        }
    }

    /// Lowercase hex of H(parts joined by ':').
    pub fn hex(self, parts: &[&[u8]]) -> String {
        fn run<D: Digest>(parts: &[&[u8]]) -> String {
            let mut hasher = D::new();
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    hasher.update(b":");
                }
                hasher.update(part);
            }
            to_hex(&hasher.finalize())
        }
        match self {
            HashKind::Md5 => run::<Md5>(parts),
            HashKind::Sha256 => run::<Sha256>(parts),
            HashKind::Sha512_256 => run::<Sha512_256>(parts),
        }
    }
}

/// The lowercase hex digits, by value.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex digits of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX_DIGITS[usize::from(b >> 4)] as char);
        out.push(HEX_DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// A client nonce from 16 random bytes (the filter's glue takes them from WASI random):
/// 32 hex digits, safe unquoted or quoted.
pub fn cnonce_from_random(bytes: &[u8; 16]) -> String {
    to_hex(bytes)
}

/// The nonce count as it goes on the wire: 8 lowercase hex digits, without formatting
/// machinery or an allocation.
fn nc_digits(nc: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (i, d) in out.iter_mut().enumerate() {
        *d = HEX_DIGITS[((nc >> (28 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// HA1 = H(username:realm:password), or the given HA1 checked and lowercased.
/// For `-sess` algorithms, H(HA1:nonce:cnonce) with HA1 in hex (RFC 7616 §3.4.2).
pub fn ha1(input: &DigestInput<'_>) -> Result<String, ResponseError> {
    let hash = input.algorithm.hash();
    let base = match input.secret {
        Secret::Password(password) => hash.hex(&[
            input.username.as_bytes(),
            input.realm.as_bytes(),
            password.as_bytes(),
        ]),
        Secret::Ha1(given) => {
            let hex = given.bytes().all(|b| b.is_ascii_hexdigit());
            if given.len() != hash.hex_len() || !hex {
                return Err(ResponseError::BadHa1 {
                    algorithm: input.algorithm.name(),
                    expected: hash.hex_len(),
                    got: given.len(),
                    hex,
                });
            }
            given.to_ascii_lowercase()
        }
    };
    Ok(if input.algorithm.is_session() {
        hash.hex(&[
            base.as_bytes(),
            input.nonce.as_bytes(),
            input.cnonce.as_bytes(),
        ])
    } else {
        base
    })
}

/// The `response` value.
pub fn compute_response(input: &DigestInput<'_>) -> Result<String, ResponseError> {
    let hash = input.algorithm.hash();
    let ha1 = ha1(input)?;
    let ha2 = match input.qop {
        Some(Qop::AuthInt) => {
            let body_hash = hash.hex(&[input.body]);
            hash.hex(&[
                input.method.as_bytes(),
                input.uri.as_bytes(),
                body_hash.as_bytes(),
            ])
        }
        _ => hash.hex(&[input.method.as_bytes(), input.uri.as_bytes()]),
    };
    Ok(match input.qop {
        Some(qop) => hash.hex(&[
            ha1.as_bytes(),
            input.nonce.as_bytes(),
            &nc_digits(input.nc),
            input.cnonce.as_bytes(),
            qop.name().as_bytes(),
            ha2.as_bytes(),
        ]),
        None => hash.hex(&[ha1.as_bytes(), input.nonce.as_bytes(), ha2.as_bytes()]),
    })
}

/// The credentials header value (RFC 7616 §3.4), fields in the order Kamailio's uac
/// writes them; `algorithm`, `qop` and `nc` unquoted, the rest quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The username as sent: H(username:realm) when `userhash` is set.
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub opaque: Option<String>,
    pub qop: Option<Qop>,
    pub nc: u32,
    /// Sent with a qop, and with a `-sess` algorithm (its HA1 depends on it).
    pub cnonce: Option<String>,
    pub response: String,
    pub algorithm: Algorithm,
    pub userhash: bool,
}

impl Authorization {
    /// Computes the response and assembles the header. `userhash` comes from the
    /// challenge (RFC 7616 §3.4.4); `opaque` is echoed unchanged.
    pub fn build(
        input: &DigestInput<'_>,
        opaque: Option<&str>,
        userhash: bool,
    ) -> Result<Authorization, ResponseError> {
        for (field, value) in [
            ("username", input.username),
            ("realm", input.realm),
            ("nonce", input.nonce),
            ("uri", input.uri),
            ("cnonce", input.cnonce),
            ("opaque", opaque.unwrap_or_default()),
        ] {
            if value.bytes().any(is_ctl) {
                return Err(ResponseError::ControlCharacter { field });
            }
        }
        let response = compute_response(input)?;
        let username = if userhash {
            input
                .algorithm
                .hash()
                .hex(&[input.username.as_bytes(), input.realm.as_bytes()])
        } else {
            input.username.to_string()
        };
        let cnonce =
            (input.qop.is_some() || input.algorithm.is_session()).then(|| input.cnonce.to_string());
        Ok(Authorization {
            username,
            realm: input.realm.to_string(),
            nonce: input.nonce.to_string(),
            uri: input.uri.to_string(),
            opaque: opaque.map(str::to_string),
            qop: input.qop,
            nc: input.nc,
            cnonce,
            response,
            algorithm: input.algorithm,
            userhash,
        })
    }
}

/// Writes `"value"` with `"` and `\` escaped as quoted-pairs; runs between the
/// characters to escape go out whole.
fn write_quoted<W: fmt::Write + ?Sized>(out: &mut W, value: &str) -> fmt::Result {
    out.write_str("\"")?;
    let mut rest = value;
    while let Some(at) = rest.bytes().position(|b| b == b'"' || b == b'\\') {
        out.write_str(&rest[..at])?;
        out.write_str("\\")?;
        out.write_str(&rest[at..=at])?;
        rest = &rest[at + 1..];
    }
    out.write_str(rest)?;
    out.write_str("\"")
}

impl Authorization {
    /// The header value, as [`Display`](fmt::Display) writes it, into one buffer sized
    /// up front: a refresh answering a kept challenge builds one of these each time, and
    /// `write!` with its argument machinery was most of the digest's cost.
    pub fn header_value(&self) -> String {
        let mut out = String::with_capacity(
            160 + self.username.len()
                + self.realm.len()
                + self.nonce.len()
                + self.uri.len()
                + self.opaque.as_ref().map_or(0, String::len)
                + self.cnonce.as_ref().map_or(0, String::len)
                + self.response.len(),
        );
        self.write_to(&mut out)
            .expect("writing to a String cannot fail");
        out
    }

    fn write_to<W: fmt::Write + ?Sized>(&self, out: &mut W) -> fmt::Result {
        let quoted_fields = [
            ("Digest username=", &self.username),
            (", realm=", &self.realm),
            (", nonce=", &self.nonce),
            (", uri=", &self.uri),
        ];
        for (name, value) in quoted_fields {
            out.write_str(name)?;
            write_quoted(out, value)?;
        }
        if let Some(opaque) = &self.opaque {
            out.write_str(", opaque=")?;
            write_quoted(out, opaque)?;
        }
        if let Some(qop) = self.qop {
            out.write_str(", qop=")?;
            out.write_str(qop.name())?;
            out.write_str(", nc=")?;
            let nc = nc_digits(self.nc);
            out.write_str(std::str::from_utf8(&nc).expect("hex digits are ASCII"))?;
        }
        if let Some(cnonce) = &self.cnonce {
            out.write_str(", cnonce=")?;
            write_quoted(out, cnonce)?;
        }
        out.write_str(", response=")?;
        write_quoted(out, &self.response)?;
        out.write_str(", algorithm=")?;
        out.write_str(self.algorithm.name())?;
        if self.userhash {
            out.write_str(", userhash=true")?;
        }
        Ok(())
    }
}

impl fmt::Display for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7616 §3.9.1.
    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
    const OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

    fn mufasa(algorithm: Algorithm) -> DigestInput<'static> {
        DigestInput {
            algorithm,
            username: "Mufasa",
            realm: "http-auth@example.org",
            secret: Secret::Password("Circle of Life"),
            nonce: NONCE,
            method: "GET",
            uri: "/dir/index.html",
            qop: Some(Qop::Auth),
            nc: 1,
            cnonce: CNONCE,
            body: b"",
        }
    }

    #[test]
    fn rfc7616_md5_vector_and_header() {
        let auth = Authorization::build(&mufasa(Algorithm::Md5), Some(OPAQUE), false).unwrap();
        assert_eq!(auth.response, "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(
            auth.to_string(),
            "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
             nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", uri=\"/dir/index.html\", \
             opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\", qop=auth, nc=00000001, \
             cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", \
             response=\"8ca523f5e9506fed4657c9700eebdbec\", algorithm=MD5"
        );
    }

    #[test]
    fn rfc7616_sha256_vector() {
        assert_eq!(
            compute_response(&mufasa(Algorithm::Sha256)).unwrap(),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc2617_vector() {
        let input = DigestInput {
            algorithm: Algorithm::Md5,
            username: "Mufasa",
            realm: "testrealm@host.com",
            secret: Secret::Password("Circle Of Life"),
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            method: "GET",
            uri: "/dir/index.html",
            qop: Some(Qop::Auth),
            nc: 1,
            cnonce: "0a4f113b",
            body: b"",
        };
        assert_eq!(
            compute_response(&input).unwrap(),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    // The expected values below were computed outside this code, with the shell:
    //   h() { printf '%s' "$2" | openssl dgst -$1 -r | cut -d' ' -f1; }
    //   HA1=$(h sha512-256 "Mufasa:http-auth@example.org:Circle of Life")
    //   HA2=$(h sha512-256 "GET:/dir/index.html"); HS=$(h sha512-256 "$HA1:$N:$C")
    //   h sha512-256 "$HA1:$N:00000001:$C:auth:$HA2"     # and "$HS:..." for -sess
    // and likewise for md5 / sha256; auth-int uses HA2=H(INVITE:sip:bob@trunk.test:H(body)).
    #[test]
    fn every_algorithm_against_openssl() {
        let cases = [
            (Algorithm::Md5Sess, "e783283f46242139c486a698fec7211d"),
            (
                Algorithm::Sha256Sess,
                "2fd51b3a77ad75bad6afad6003e818d767133c46d9e2749e7f5232ae1ea3efd7",
            ),
            (
                Algorithm::Sha512_256,
                "430d05014cecc49cab6fbe03176d41a1da86cbfe24a16580e22aaad928d960d0",
            ),
            (
                Algorithm::Sha512_256Sess,
                "3f2a34f923c38b0fb26dce2fdfc2ce326c23cecf86fbb1444f3e51fbbc2cb92e",
            ),
        ];
        for (algorithm, expected) in cases {
            assert_eq!(
                compute_response(&mufasa(algorithm)).unwrap(),
                expected,
                "{}",
                algorithm.name()
            );
        }
    }

    #[test]
    fn auth_int_hashes_the_body_with_nc_2() {
        let cases = [
            (Algorithm::Md5Sess, "04c7c95ff89fbe69d678b22c2f9c2396"),
            (
                Algorithm::Sha256Sess,
                "8f8947c631f861442d340df7f73b77d344c5fd37c8a511c4170d914c732021e0",
            ),
            (
                Algorithm::Sha512_256Sess,
                "f0e5c0581d136e4dc7fe594b0ed13610d1fa0920d84d2edfe513fc71fff19d6e",
            ),
        ];
        for (algorithm, expected) in cases {
            let input = DigestInput {
                method: "INVITE",
                uri: "sip:bob@trunk.test",
                qop: Some(Qop::AuthInt),
                nc: 2,
                body: b"v=0\n",
                ..mufasa(algorithm)
            };
            assert_eq!(compute_response(&input).unwrap(), expected);
            let mut other_body = input;
            other_body.body = b"v=1\n";
            assert_ne!(compute_response(&other_body).unwrap(), expected);
        }
    }

    #[test]
    fn without_qop_rfc2069() {
        let cases = [
            (Algorithm::Md5, "7b2cc3b30e75b4777ea31027084363fd"),
            (
                Algorithm::Sha256,
                "a1306b0595a6c7fe96c448631fb5cfbd5107bd1fe1da729d978dd7446b812363",
            ),
            (
                Algorithm::Sha512_256,
                "93e9122020ea0624d2ca801426d5bfbeb93d10ff4cc24cb410af3920fa4730e7",
            ),
        ];
        for (algorithm, expected) in cases {
            let input = DigestInput {
                qop: None,
                ..mufasa(algorithm)
            };
            let auth = Authorization::build(&input, None, false).unwrap();
            assert_eq!(auth.response, expected);
            let text = auth.to_string();
            assert!(!text.contains("qop=") && !text.contains("nc=") && !text.contains("cnonce="));
        }
    }

    #[test]
    fn ha1_given_directly_gives_the_same_answer() {
        let cases = [
            (Algorithm::Md5, "3d78807defe7de2157e2b0b6573a855f"),
            (Algorithm::Md5Sess, "3D78807DEFE7DE2157E2B0B6573A855F"),
            (
                Algorithm::Sha256,
                "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232",
            ),
            (
                Algorithm::Sha512_256Sess,
                "fb174f5c3c7802721517cae13b98e2b8dae2e0118cb705d94ee29946319204ce",
            ),
        ];
        for (algorithm, ha1) in cases {
            let with_password = compute_response(&mufasa(algorithm)).unwrap();
            let input = DigestInput {
                secret: Secret::Ha1(ha1),
                ..mufasa(algorithm)
            };
            assert_eq!(compute_response(&input).unwrap(), with_password);
        }
    }

    #[test]
    fn ha1_of_the_wrong_shape_is_an_error() {
        let short = DigestInput {
            secret: Secret::Ha1("3d78807defe7de2157e2b0b6573a855f"),
            ..mufasa(Algorithm::Sha256)
        };
        let err = compute_response(&short).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HA1 must be 64 hex digits for SHA-256 (got 32 characters)"
        );
        let not_hex = DigestInput {
            secret: Secret::Ha1("zd78807defe7de2157e2b0b6573a855f"),
            ..mufasa(Algorithm::Md5)
        };
        assert!(matches!(
            compute_response(&not_hex),
            Err(ResponseError::BadHa1 { hex: false, .. })
        ));
    }

    #[test]
    fn quoted_values_are_escaped_and_userhash_sent() {
        let input = DigestInput {
            username: "a\"b",
            realm: "r\\1",
            ..mufasa(Algorithm::Sha256)
        };
        let plain = Authorization::build(&input, None, false)
            .unwrap()
            .to_string();
        assert!(
            plain.starts_with(r#"Digest username="a\"b", realm="r\\1", "#),
            "{plain}"
        );
        let hashed = Authorization::build(&input, None, true).unwrap();
        assert_eq!(
            hashed.username,
            HashKind::Sha256.hex(&[b"a\"b", b"r\\1"]),
            "username = H(user:realm)"
        );
        assert!(
            hashed
                .to_string()
                .ends_with(", algorithm=SHA-256, userhash=true")
        );
    }

    #[test]
    fn cnonce_is_the_hex_of_the_random_bytes() {
        let bytes = [
            0u8, 1, 2, 0xab, 0xcd, 0xef, 0x10, 0x7f, 0x80, 0xff, 9, 10, 11, 12, 13, 14,
        ];
        assert_eq!(
            cnonce_from_random(&bytes),
            "000102abcdef107f80ff090a0b0c0d0e"
        );
    }

    #[test]
    fn control_characters_never_reach_the_header() {
        let input = DigestInput {
            username: "alice\r\nVia: evil",
            ..mufasa(Algorithm::Md5)
        };
        assert_eq!(
            Authorization::build(&input, None, false),
            Err(ResponseError::ControlCharacter { field: "username" })
        );
        assert_eq!(
            Authorization::build(&mufasa(Algorithm::Md5), Some("o\0"), false),
            Err(ResponseError::ControlCharacter { field: "opaque" })
        );
    }

    #[test]
    fn session_algorithm_without_qop_still_sends_its_cnonce() {
        let input = DigestInput {
            qop: None,
            ..mufasa(Algorithm::Md5Sess)
        };
        let text = Authorization::build(&input, None, false)
            .unwrap()
            .to_string();
        assert!(text.contains(&format!("cnonce=\"{CNONCE}\"")) && !text.contains("nc="));
    }
}
