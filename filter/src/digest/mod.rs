//! Digest authentication for the uac filter's `uac_auth()`: parse 401/407 challenges,
//! pick what to answer and compute the Authorization headers (RFC 2617, 7616, 8760).
//! Pure and sans-I/O: the cnonce and all state (nonce counts, retries) come from the caller.

pub mod answer;
pub mod challenge;
pub mod credentials;
pub mod cseq;
pub mod resend;
pub mod response;
pub mod state;

pub use answer::{
    AuthAnswer, AuthError, AuthRequest, ChallengeKind, answer_challenges, answer_parsed,
    credentials_realm,
};
pub use challenge::{
    Challenge, ChallengeAlgorithm, ChallengeError, QopOptions, parse_challenges, parse_header_lines,
};
pub use credentials::{CallCredentials, Credential, CredentialError, parse_credentials};
pub use resend::{Resend, ResendError, plan_resend};
pub use response::{
    Authorization, DigestInput, Qop, ResponseError, Secret, cnonce_from_random, compute_response,
    to_hex,
};
pub use state::{AttemptVerdict, Attempts, NonceCounts};

/// The hash function under an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    Md5,
    Sha256,
    Sha512_256,
}

/// A Digest algorithm this filter computes (RFC 7616 §6.1 registry plus MD5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Md5Sess,
    Sha256,
    Sha256Sess,
    Sha512_256,
    Sha512_256Sess,
}

impl Algorithm {
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Md5,
        Algorithm::Md5Sess,
        Algorithm::Sha256,
        Algorithm::Sha256Sess,
        Algorithm::Sha512_256,
        Algorithm::Sha512_256Sess,
    ];

    /// The algorithm named by a challenge's `algorithm` token (case-insensitive).
    pub fn from_token(token: &str) -> Option<Algorithm> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(token.trim()))
    }

    /// The token as RFC 7616 spells it, used in the answer.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    pub fn hash(self) -> HashKind {
        match self {
            Algorithm::Md5 | Algorithm::Md5Sess => HashKind::Md5,
            Algorithm::Sha256 | Algorithm::Sha256Sess => HashKind::Sha256,
            Algorithm::Sha512_256 | Algorithm::Sha512_256Sess => HashKind::Sha512_256,
        }
    }

    /// `-sess`: HA1 is bound to the nonce and cnonce (RFC 7616 §3.4.2).
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// Preference among the challenges of one realm: the stronger hash first; for the
    /// same hash the `-sess` variant, as Kamailio's newest uac ranks MD5-sess over MD5.
    pub fn strength(self) -> u8 {
        let hash = match self.hash() {
            HashKind::Md5 => 0,
            HashKind::Sha256 => 2,
            HashKind::Sha512_256 => 4,
        };
        hash + u8::from(self.is_session())
    }
}
