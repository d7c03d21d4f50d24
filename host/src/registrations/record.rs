//! One remote-registration account as Kamailio's `uacreg` row holds it, packed
//! small for a million of them, and its live state (flags, binding, Call-ID, CSeq).

use std::fmt;

use sha2::{Digest, Sha256};

/// Kamailio's record flags, also the values `uac.reg_info` shows.
pub mod flags {
    /// Not registered and not scheduled until enabled.
    pub const DISABLED: u32 = 1;
    /// A REGISTER is under way.
    pub const ONGOING: u32 = 2;
    /// Registered: the registrar holds our binding.
    pub const ONLINE: u32 = 4;
    /// The REGISTER under way already carries credentials.
    pub const AUTHSENT: u32 = 8;
    /// The initial delay (`reg_delay`) has passed.
    pub const INIT: u32 = 16;
    /// Every flag Kamailio defines.
    pub const ALL: u32 = DISABLED | ONGOING | ONLINE | AUTHSENT | INIT;
}

/// A password or HA1: printed by `Debug` as `"<redacted>"` (or `""` when
/// empty) so it cannot end up in a log line by accident.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the digest computation only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"<redacted>\"")
        }
    }
}

/// One `uacreg` row (version 5, plus version 6's `contact_user`), owned and
/// unvalidated: what the database, `uac.reg_add` or a test hands in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub l_uuid: String,
    pub l_username: String,
    pub l_domain: String,
    pub r_username: String,
    pub r_domain: String,
    pub realm: String,
    pub auth_username: String,
    pub auth_password: Secret,
    pub auth_ha1: Secret,
    pub auth_proxy: String,
    pub expires: u32,
    pub flags: u32,
    pub reg_delay: u32,
    pub contact_addr: String,
    pub socket: String,
    /// Version 6 only; empty when the table has no such column.
    pub contact_user: String,
}

/// Why a row is not loaded (Kamailio would reject it too, or it cannot be
/// represented). The message is the "why" of the skip log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("column {0} is empty")]
    Empty(&'static str),
    #[error("column {column} is negative ({value})")]
    Negative { column: &'static str, value: i64 },
    #[error("column {column} is out of range ({value})")]
    OutOfRange { column: &'static str, value: i64 },
    #[error("neither auth_password nor auth_ha1 is set")]
    NoCredentials,
    #[error("auth_ha1 is neither 32 (MD5) nor 64 (SHA-256) hex digits")]
    BadHa1,
    #[error("l_uuid {0:?} appears in an earlier row")]
    DuplicateUuid(String),
    #[error("column {column} cannot be read: {why}")]
    Unreadable { column: &'static str, why: String },
    #[error("the row's text columns together exceed {} bytes", u16::MAX)]
    TooLong,
}

/// Converts a database integer column to `u32`, naming the column on failure.
pub fn column_u32(column: &'static str, value: i64) -> Result<u32, RowError> {
    if value < 0 {
        return Err(RowError::Negative { column, value });
    }
    u32::try_from(value).map_err(|_| RowError::OutOfRange { column, value })
}

impl Record {
    /// Checks the row the way Kamailio's loader does (the mandatory columns and
    /// credentials), but also accepts a SHA-256 HA1, and returns the record in
    /// its normalised form (HA1 lowercased, as Kamailio does).
    pub fn validated(mut self) -> Result<Record, RowError> {
        let mandatory = [
            ("l_uuid", &self.l_uuid),
            ("l_username", &self.l_username),
            ("l_domain", &self.l_domain),
            ("r_username", &self.r_username),
            ("r_domain", &self.r_domain),
            ("auth_username", &self.auth_username),
            ("auth_proxy", &self.auth_proxy),
        ];
        for (column, value) in mandatory {
            if value.is_empty() {
                return Err(RowError::Empty(column));
            }
        }
        if !self.auth_ha1.is_empty() {
            let ha1 = self.auth_ha1.expose();
            if !matches!(ha1.len(), 32 | 64) || !ha1.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(RowError::BadHa1);
            }
            self.auth_ha1 = Secret::new(ha1.to_ascii_lowercase());
        } else if self.auth_password.is_empty() {
            return Err(RowError::NoCredentials);
        }
        if self.text_fields().iter().map(|f| f.len()).sum::<usize>() > usize::from(u16::MAX) {
            return Err(RowError::TooLong);
        }
        Ok(self)
    }

    fn text_fields(&self) -> [&str; FIELD_COUNT] {
        [
            &self.l_uuid,
            &self.l_username,
            &self.l_domain,
            &self.r_username,
            &self.r_domain,
            &self.realm,
            &self.auth_username,
            self.auth_password.expose(),
            self.auth_ha1.expose(),
            &self.auth_proxy,
            &self.contact_addr,
            &self.socket,
            &self.contact_user,
        ]
    }

    /// A stable fingerprint of the row's content, stored beside the live
    /// state: a row edited while siphost was down gets a fresh start.
    pub fn content_hash(&self) -> i64 {
        let mut hash = Sha256::new();
        for field in self.text_fields() {
            hash.update((field.len() as u32).to_le_bytes());
            hash.update(field.as_bytes());
        }
        for number in [self.expires, self.flags, self.reg_delay] {
            hash.update(number.to_le_bytes());
        }
        let digest = hash.finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_le_bytes(first)
    }
}

const FIELD_COUNT: usize = 13;

/// Which packed text column an accessor reads (index into `Account::ends`).
#[derive(Clone, Copy)]
enum Field {
    LUuid,
    LUsername,
    LDomain,
    RUsername,
    RDomain,
    Realm,
    AuthUsername,
    AuthPassword,
    AuthHa1,
    AuthProxy,
    ContactAddr,
    Socket,
    ContactUser,
}

/// A validated record packed into one allocation: all text columns
/// concatenated, with their end offsets. About a third of the memory of
/// thirteen `String`s, which matters at a million accounts.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    text: Box<str>,
    ends: [u16; FIELD_COUNT],
    expires: u32,
    flags: u32,
    reg_delay: u32,
    content_hash: i64,
}

macro_rules! text_accessors {
    ($($name:ident => $field:ident),* $(,)?) => {
        $(
            #[doc = concat!("The `", stringify!($name), "` column.")]
            pub fn $name(&self) -> &str {
                self.field(Field::$field)
            }
        )*
    };
}

impl Account {
    /// Packs a record that passed [`Record::validated`].
    pub fn new(record: &Record) -> Result<Account, RowError> {
        let fields = record.text_fields();
        let mut text = String::with_capacity(fields.iter().map(|f| f.len()).sum());
        let mut ends = [0u16; FIELD_COUNT];
        for (end, field) in ends.iter_mut().zip(fields) {
            text.push_str(field);
            *end = u16::try_from(text.len()).map_err(|_| RowError::TooLong)?;
        }
        Ok(Account {
            text: text.into_boxed_str(),
            ends,
            expires: record.expires,
            flags: record.flags,
            reg_delay: record.reg_delay,
            content_hash: record.content_hash(),
        })
    }

    fn field(&self, field: Field) -> &str {
        let index = field as usize;
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.text[usize::from(start)..usize::from(self.ends[index])]
    }

    text_accessors! {
        l_uuid => LUuid,
        l_username => LUsername,
        l_domain => LDomain,
        r_username => RUsername,
        r_domain => RDomain,
        realm => Realm,
        auth_username => AuthUsername,
        auth_proxy => AuthProxy,
        contact_addr => ContactAddr,
        socket => Socket,
        contact_user => ContactUser,
    }

    /// The plain password (empty when only an HA1 is set). Never log it.
    pub fn auth_password(&self) -> &str {
        self.field(Field::AuthPassword)
    }

    /// The lowercased HA1 (empty when a password is set). Never log it.
    pub fn auth_ha1(&self) -> &str {
        self.field(Field::AuthHa1)
    }

    /// Requested binding lifetime in seconds (0: never registered).
    pub fn expires(&self) -> u32 {
        self.expires
    }

    /// The row's `flags` column (1 loads the record disabled).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// Initial delay in seconds before the first REGISTER.
    pub fn reg_delay(&self) -> u32 {
        self.reg_delay
    }

    /// Fingerprint of the row's content, see [`Record::content_hash`].
    pub fn content_hash(&self) -> i64 {
        self.content_hash
    }

    /// Unpacks into an owned record (for `uac.reg_dump`, tests).
    pub fn to_record(&self) -> Record {
        Record {
            l_uuid: self.l_uuid().to_owned(),
            l_username: self.l_username().to_owned(),
            l_domain: self.l_domain().to_owned(),
            r_username: self.r_username().to_owned(),
            r_domain: self.r_domain().to_owned(),
            realm: self.realm().to_owned(),
            auth_username: self.auth_username().to_owned(),
            auth_password: Secret::new(self.auth_password()),
            auth_ha1: Secret::new(self.auth_ha1()),
            auth_proxy: self.auth_proxy().to_owned(),
            expires: self.expires,
            flags: self.flags,
            reg_delay: self.reg_delay,
            contact_addr: self.contact_addr().to_owned(),
            socket: self.socket().to_owned(),
            contact_user: self.contact_user().to_owned(),
        }
    }
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_record(), f)
    }
}

/// What siphost knows about a record beyond its row, persisted in its own
/// table so a restart (even after `kill -9`) keeps valid bindings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LiveState {
    /// [`flags`] bits.
    pub flags: u32,
    /// The Expires in use: the row's, or what a 423 Min-Expires raised it to.
    pub expires: u32,
    /// UNIX seconds at which the registrar drops our binding (0: none).
    pub registered_until: u64,
    /// Call-ID of the last successful registration (kept with `reg_keep_callid`).
    pub call_id: String,
    /// CSeq of the last REGISTER sent in `call_id`.
    pub cseq: u32,
    /// Status of the last final reply (408 for a time-out; 0: none yet).
    pub last_status: u16,
    /// Reason phrase of the last final reply.
    pub last_reason: String,
    /// Failures since the last success, for the retry backoff.
    pub failures: u32,
    /// UNIX milliseconds at which the record is due next (0: not scheduled).
    pub next_due_ms: u64,
}

impl LiveState {
    /// The state a freshly loaded row starts in: the row's `flags` column
    /// decides whether it is disabled, nothing else is known yet.
    pub fn initial(account: &Account) -> LiveState {
        LiveState {
            flags: account.flags() & flags::DISABLED,
            expires: account.expires(),
            ..LiveState::default()
        }
    }

    /// Whether the registrar holds a binding at `now_secs` (UNIX seconds). A
    /// refresh under way does not end a binding that is still valid.
    pub fn is_registered(&self, now_secs: u64) -> bool {
        self.flags & flags::ONLINE != 0 && self.registered_until > now_secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::registrations::test_record as record;

    #[test]
    fn packed_account_round_trips_every_column() {
        let mut original = record("u1");
        original.realm = "realm.test".to_owned();
        original.contact_addr = "10.0.0.1:5060".to_owned();
        original.socket = "udp:10.0.0.1:5060".to_owned();
        original.contact_user = "line-user".to_owned();
        original.flags = 1;
        original.reg_delay = 7;
        let account = Account::new(&original).expect("packs");
        assert_eq!(account.to_record(), original);
        assert_eq!(account.contact_user(), "line-user");
        assert_eq!(account.auth_ha1(), "");
        assert_eq!(LiveState::initial(&account).flags, flags::DISABLED);
    }

    #[test]
    fn kamailio_rejections_are_named() {
        for (column, clear) in [
            (
                "l_uuid",
                (|r: &mut Record| r.l_uuid.clear()) as fn(&mut Record),
            ),
            ("l_username", |r| r.l_username.clear()),
            ("l_domain", |r| r.l_domain.clear()),
            ("r_username", |r| r.r_username.clear()),
            ("r_domain", |r| r.r_domain.clear()),
            ("auth_username", |r| r.auth_username.clear()),
            ("auth_proxy", |r| r.auth_proxy.clear()),
        ] {
            let mut bad = record("u");
            clear(&mut bad);
            assert_eq!(bad.validated(), Err(RowError::Empty(column)));
        }
        let mut no_credentials = record("u");
        no_credentials.auth_password = Secret::default();
        assert_eq!(no_credentials.validated(), Err(RowError::NoCredentials));
        let mut bad_ha1 = record("u");
        bad_ha1.auth_ha1 = Secret::new("abc");
        assert_eq!(bad_ha1.validated(), Err(RowError::BadHa1));
        assert_eq!(
            column_u32("expires", -5),
            Err(RowError::Negative {
                column: "expires",
                value: -5
            })
        );
    }

    #[test]
    fn ha1_is_lowercased_and_sha256_ha1_accepted() {
        let mut md5 = record("u");
        md5.auth_password = Secret::default();
        md5.auth_ha1 = Secret::new("0123456789ABCDEF0123456789ABCDEF");
        assert_eq!(
            md5.validated().expect("valid").auth_ha1.expose(),
            "0123456789abcdef0123456789abcdef"
        );
        let mut sha256 = record("u");
        sha256.auth_ha1 = Secret::new("ab".repeat(32));
        assert!(sha256.validated().is_ok());
    }

    #[test]
    fn debug_output_redacts_credentials() {
        let mut rec = record("u");
        rec.auth_ha1 = Secret::new("0123456789abcdef0123456789abcdef");
        let account = Account::new(&rec).expect("packs");
        for text in [format!("{rec:?}"), format!("{account:?}")] {
            assert!(!text.contains("s3cret-pw"), "{text}");
            assert!(!text.contains("0123456789abcdef"), "{text}");
            assert!(text.contains("<redacted>"), "{text}");
        }
    }

    #[test]
    fn content_hash_tells_edited_rows_apart() {
        let a = record("u");
        let mut b = record("u");
        assert_eq!(a.content_hash(), b.content_hash());
        b.expires = 60;
        assert_ne!(a.content_hash(), b.content_hash());
        let mut c = record("u");
        // Moving a byte between adjacent columns must change the hash.
        c.l_domain = "ocal.test".to_owned();
        c.l_username.push('l');
        assert_ne!(a.content_hash(), c.content_hash());
    }
}
