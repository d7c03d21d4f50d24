//! The stored original of a replaced From/To URI, carried in a Record-Route parameter
//! (vsf/vst): Kamailio's XOR encoding, byte for byte, and an authenticated (AEAD) form.
//!
//! Kamailio's form: the longer of old and new URI, its first bytes XORed with the shorter,
//! XORed with `restore_passwd` (cycled), base64 with `-` as padding. Either URI opens the
//! other, so any endpoint or proxy on the path can read and forge it.
//!
//! The secure form (`restore_secure = true`) seals both URIs and both display names with
//! XChaCha20-Poly1305 under a numbered key; the parameter name and the dialog's from-tag are
//! bound as associated data. A tampered or foreign value does not open, and a header whose
//! URI is neither of the sealed ones is refused instead of being "restored" to garbage.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use thiserror::Error;

/// Why a stored parameter could not be turned back into a URI.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not valid base64")]
    Base64,
    #[error("decodes to {decoded} bytes, shorter than the {current}-byte URI in the header")]
    TooShort { decoded: usize, current: usize },
    #[error("decodes to an empty or non-printable URI")]
    NotPrintable,
    #[error("sealed with unknown key id {0}")]
    UnknownKey(u8),
    #[error("does not open: tampered, foreign, or bound to another parameter or dialog")]
    Unsealed,
    #[error("sealed content is malformed")]
    Malformed,
    #[error("the header URI is neither of the sealed ones (changed mid-dialog)")]
    UriMismatch,
}

/// Kamailio's encoding of the pair (URI in the header now, its replacement).
pub fn encode_kamailio(old: &str, new: &str, passwd: &str) -> String {
    let (long, short) = if old.len() >= new.len() {
        (old.as_bytes(), new.as_bytes())
    } else {
        (new.as_bytes(), old.as_bytes())
    };
    let mut buf = long.to_vec();
    for (b, s) in buf.iter_mut().zip(short) {
        *b ^= s;
    }
    xor_cycled(&mut buf, passwd.as_bytes());
    STANDARD.encode(&buf).replace('=', "-")
}

/// Kamailio's decoding: the URI the parameter pairs with `current`.
pub fn decode_kamailio(param: &str, current: &str, passwd: &str) -> Result<String, DecodeError> {
    let mut buf = STANDARD_NO_PAD
        .decode(param.trim_end_matches('-'))
        .map_err(|_| DecodeError::Base64)?;
    xor_cycled(&mut buf, passwd.as_bytes());
    if current.len() > buf.len() {
        return Err(DecodeError::TooShort {
            decoded: buf.len(),
            current: current.len(),
        });
    }
    for (b, c) in buf.iter_mut().zip(current.as_bytes()) {
        *b ^= c;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf.truncate(end);
    if buf.is_empty() || !buf.iter().all(|b| b.is_ascii_graphic()) {
        return Err(DecodeError::NotPrintable);
    }
    // Printable ASCII is valid UTF-8.
    String::from_utf8(buf).map_err(|_| DecodeError::NotPrintable)
}

fn xor_cycled(buf: &mut [u8], key: &[u8]) {
    if key.is_empty() {
        return;
    }
    for (b, k) in buf.iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

/// What a secure parameter holds: both sides of the replacement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub old_uri: String,
    pub new_uri: String,
    /// Display names, when the replacement set one (`None` inside: no display).
    pub displays: Option<(Option<String>, Option<String>)>,
}

/// The other side of a sealed pair, seen from the URI now in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub uri: String,
    /// `Some(None)`: remove the display; `None`: leave it.
    pub display: Option<Option<String>>,
}

impl Sealed {
    /// The URI (and display) to put into a header that now holds `current`.
    pub fn other_side(&self, current: &str) -> Result<Restored, DecodeError> {
        let (uri, display) = if current == self.new_uri {
            (&self.old_uri, self.displays.as_ref().map(|d| d.0.clone()))
        } else if current == self.old_uri {
            (&self.new_uri, self.displays.as_ref().map(|d| d.1.clone()))
        } else {
            return Err(DecodeError::UriMismatch);
        };
        Ok(Restored {
            uri: uri.clone(),
            display,
        })
    }

    fn to_bytes(&self) -> Vec<u8> {
        // Fields are separated by NUL, which no SIP header text contains.
        let mut out = Vec::new();
        out.push(u8::from(self.displays.is_some()));
        out.extend_from_slice(self.old_uri.as_bytes());
        out.push(0);
        out.extend_from_slice(self.new_uri.as_bytes());
        if let Some((old, new)) = &self.displays {
            for d in [old, new] {
                out.push(0);
                match d {
                    Some(d) => {
                        out.push(1);
                        out.extend_from_slice(d.as_bytes());
                    }
                    None => out.push(0),
                }
            }
        }
        out
    }

    fn from_bytes(bytes: &[u8]) -> Result<Sealed, DecodeError> {
        let (&flag, rest) = bytes.split_first().ok_or(DecodeError::Malformed)?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Malformed);
        let parts: Vec<&[u8]> = rest.split(|&b| b == 0).collect();
        let display = |p: &[u8]| -> Result<Option<String>, DecodeError> {
            match p.split_first() {
                Some((0, [])) => Ok(None),
                Some((1, d)) => Ok(Some(text(d)?)),
                _ => Err(DecodeError::Malformed),
            }
        };
        match (flag, parts.as_slice()) {
            (0, [old, new]) => Ok(Sealed {
                old_uri: text(old)?,
                new_uri: text(new)?,
                displays: None,
            }),
            (1, [old, new, od, nd]) => Ok(Sealed {
                old_uri: text(old)?,
                new_uri: text(new)?,
                displays: Some((display(od)?, display(nd)?)),
            }),
            _ => Err(DecodeError::Malformed),
        }
    }
}

/// XChaCha20-Poly1305 nonce length.
pub const NONCE_LEN: usize = 24;

/// The keys of the secure mode: the first seals, every one opens (rotation).
#[derive(Clone)]
pub struct SecureKeys {
    keys: Vec<(u8, XChaCha20Poly1305)>,
}

impl std::fmt::Debug for SecureKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<u8> = self.keys.iter().map(|(id, _)| *id).collect();
        f.debug_struct("SecureKeys").field("ids", &ids).finish()
    }
}

/// A `restore_secure_keys` entry that is not `ID:HEX`.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("no keys given")]
    Empty,
    #[error("entry {0}: expected \"ID:KEY\" with ID 0-255 and KEY 64 hex digits (32 bytes)")]
    Format(usize),
    #[error("entry {0}: key id {1} appears twice")]
    Duplicate(usize, u8),
}

impl SecureKeys {
    /// Parses `["ID:64-hex-digits", ...]`; the first entry is the sealing key.
    pub fn parse(entries: &[String]) -> Result<SecureKeys, KeyError> {
        if entries.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut keys: Vec<(u8, XChaCha20Poly1305)> = Vec::new();
        for (n, entry) in entries.iter().enumerate() {
            let (id, hex) = entry.split_once(':').ok_or(KeyError::Format(n + 1))?;
            let id: u8 = id.trim().parse().map_err(|_| KeyError::Format(n + 1))?;
            let key = decode_hex32(hex.trim()).ok_or(KeyError::Format(n + 1))?;
            if keys.iter().any(|(k, _)| *k == id) {
                return Err(KeyError::Duplicate(n + 1, id));
            }
            keys.push((id, XChaCha20Poly1305::new(&key.into())));
        }
        Ok(SecureKeys { keys })
    }

    /// Seals `content` for parameter `param` of the dialog with from-tag `ftag`.
    pub fn seal(
        &self,
        content: &Sealed,
        param: &str,
        ftag: &str,
        nonce: [u8; NONCE_LEN],
    ) -> String {
        let (id, cipher) = &self.keys[0];
        let aad = associated_data(param, ftag);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &content.to_bytes(),
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 encryption has no failure case for in-memory sizes");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(*id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens a sealed parameter value.
    pub fn open(&self, value: &str, param: &str, ftag: &str) -> Result<Sealed, DecodeError> {
        let raw = URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| DecodeError::Base64)?;
        if raw.len() < 1 + NONCE_LEN + 16 {
            return Err(DecodeError::Unsealed);
        }
        let (id, rest) = (raw[0], &raw[1..]);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let cipher = self
            .keys
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, c)| c)
            .ok_or(DecodeError::UnknownKey(id))?;
        let aad = associated_data(param, ftag);
        let plain = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| DecodeError::Unsealed)?;
        Sealed::from_bytes(&plain)
    }
}

fn associated_data(param: &str, ftag: &str) -> Vec<u8> {
    format!("siphost-uac-restore/1;{param};{ftag}").into_bytes()
}

fn decode_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "1:000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "2:ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

    fn keys(entries: &[&str]) -> SecureKeys {
        SecureKeys::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn sealed() -> Sealed {
        Sealed {
            old_uri: "sip:alice@example.com".into(),
            new_uri: "sip:anonymous@anonymous.invalid".into(),
            displays: Some((Some("\"Alice\"".into()), Some("\"Anonymous\"".into()))),
        }
    }

    #[test]
    fn kamailio_roundtrip_both_directions_and_lengths() {
        for (old, new, pw) in [
            ("sip:a@b.c", "sip:much.longer@x.example.org", ""),
            ("sip:much.longer@x.example.org", "sip:a@b.c", "pw"),
            ("sip:same@x", "sip:same@y", "my_secret_passwd"),
        ] {
            let enc = encode_kamailio(old, new, pw);
            assert_eq!(decode_kamailio(&enc, new, pw).unwrap(), old);
            assert_eq!(decode_kamailio(&enc, old, pw).unwrap(), new);
        }
    }

    #[test]
    fn kamailio_decode_refuses_garbage() {
        assert_eq!(
            decode_kamailio("!!", "sip:a@b", ""),
            Err(DecodeError::Base64)
        );
        let short = encode_kamailio("sip:a", "sip:b", "");
        assert_eq!(
            decode_kamailio(&short, "sip:longer@example.com", ""),
            Err(DecodeError::TooShort {
                decoded: 5,
                current: 22
            })
        );
        // Control bytes after the XOR are refused (a wrong password often, not always,
        // yields them: XOR cannot tell; the secure mode can).
        assert_eq!(
            decode_kamailio("AQID", "x", ""),
            Err(DecodeError::NotPrintable)
        );
        assert_eq!(
            decode_kamailio("eA--", "x", ""),
            Err(DecodeError::NotPrintable)
        );
    }

    #[test]
    fn secure_roundtrip_and_display() {
        let k = keys(&[K1]);
        let v = k.seal(&sealed(), "vsf", "ftag0", [7; NONCE_LEN]);
        let opened = k.open(&v, "vsf", "ftag0").unwrap();
        assert_eq!(opened, sealed());
        assert_eq!(
            opened
                .other_side("sip:anonymous@anonymous.invalid")
                .unwrap(),
            Restored {
                uri: "sip:alice@example.com".into(),
                display: Some(Some("\"Alice\"".into()))
            }
        );
        assert_eq!(
            opened.other_side("sip:alice@example.com").unwrap().uri,
            "sip:anonymous@anonymous.invalid"
        );
        assert_eq!(
            opened.other_side("sip:mallory@x"),
            Err(DecodeError::UriMismatch)
        );
    }

    #[test]
    fn secure_refuses_tampering_and_foreign_binding() {
        let k = keys(&[K1]);
        let v = k.seal(&sealed(), "vsf", "ftag0", [7; NONCE_LEN]);
        let mut raw = URL_SAFE_NO_PAD.decode(&v).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(
            k.open(&tampered, "vsf", "ftag0"),
            Err(DecodeError::Unsealed)
        );
        assert_eq!(k.open(&v, "vst", "ftag0"), Err(DecodeError::Unsealed));
        assert_eq!(k.open(&v, "vsf", "other"), Err(DecodeError::Unsealed));
        // A Kamailio value is foreign.
        let kam = encode_kamailio("sip:a@b", "sip:c@d", "");
        assert!(k.open(&kam, "vsf", "ftag0").is_err());
    }

    #[test]
    fn rotation_old_keys_still_open() {
        let old = keys(&[K1]);
        let v = old.seal(&sealed(), "vst", "t", [1; NONCE_LEN]);
        let rotated = keys(&[K2, K1]);
        assert_eq!(rotated.open(&v, "vst", "t").unwrap(), sealed());
        let newer = rotated.seal(&sealed(), "vst", "t", [2; NONCE_LEN]);
        assert_eq!(
            old.open(&newer, "vst", "t"),
            Err(DecodeError::UnknownKey(2))
        );
        assert!(newer.starts_with(&URL_SAFE_NO_PAD.encode([2u8])[..1]));
    }

    #[test]
    fn key_list_errors_name_the_entry() {
        let parse =
            |e: &[&str]| SecureKeys::parse(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(parse(&[]).unwrap_err(), KeyError::Empty);
        assert_eq!(parse(&[K1, "3:abcd"]).unwrap_err(), KeyError::Format(2));
        assert_eq!(parse(&["x:00"]).unwrap_err(), KeyError::Format(1));
        assert_eq!(parse(&[K1, K1]).unwrap_err(), KeyError::Duplicate(2, 1));
    }

    #[test]
    fn malformed_sealed_content_is_refused() {
        assert_eq!(Sealed::from_bytes(&[]), Err(DecodeError::Malformed));
        assert_eq!(Sealed::from_bytes(b"\x00a"), Err(DecodeError::Malformed));
        assert_eq!(
            Sealed::from_bytes(b"\x01a\x00b\x00\x05"),
            Err(DecodeError::Malformed)
        );
    }
}
