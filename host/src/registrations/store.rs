//! The tenant's registration database over sqlx: Kamailio's `uacreg` table read
//! as it is, and siphost's live state persisted in its own table beside it.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::config::{RegistrationsConfig, validate_table_name};
use super::record::{Account, LiveState, Record, RowError, Secret, column_u32};
use super::state_log::StateLog;
use super::table::{RecordId, RegistrationTable, ReloadDiff};

/// Rows read per query when loading, so a million-row table is never held
/// twice in memory.
const LOAD_PAGE: i64 = 5000;
/// State rows written per statement.
const SAVE_CHUNK: usize = 100;

/// A parsed `db_url`.
#[derive(Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// An SQLite file, created on first start.
    Sqlite(PathBuf),
    /// `postgres://…` / `postgresql://…`, handed to the driver as it is.
    Postgres(String),
    /// `mysql://…` (MariaDB or MySQL), handed to the driver as it is.
    MySql(String),
}

/// Why a `db_url` is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("unsupported scheme (expected sqlite://, postgres:// or mysql://)")]
    Scheme,
    #[error("no database file path after sqlite://")]
    NoPath,
}

impl DbUrl {
    /// Accepts `sqlite:///abs/path`, Kamailio's `sqlite:////abs/path`,
    /// `sqlite://relative/path`, `postgres://…`, `postgresql://…`, `mysql://…`.
    pub fn parse(url: &str) -> Result<DbUrl, UrlError> {
        if let Some(rest) = url.strip_prefix("sqlite://") {
            // Kamailio writes an absolute path with an extra slash: the empty
            // host, then "/" + "/abs/path".
            let path = if rest.starts_with("//") {
                &rest[1..]
            } else {
                rest
            };
            if path.is_empty() || path == "/" {
                return Err(UrlError::NoPath);
            }
            return Ok(DbUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(url.to_owned()));
        }
        if url.starts_with("mysql://") {
            return Ok(DbUrl::MySql(url.to_owned()));
        }
        Err(UrlError::Scheme)
    }

    fn dialect(&self) -> Dialect {
        match self {
            DbUrl::Sqlite(_) => Dialect::Sqlite,
            DbUrl::Postgres(_) => Dialect::Postgres,
            DbUrl::MySql(_) => Dialect::MySql,
        }
    }

    /// The URL sqlx's driver understands.
    fn driver_url(&self) -> String {
        match self {
            DbUrl::Sqlite(path) => {
                let path = path.to_string_lossy();
                let escaped = path
                    .replace('%', "%25")
                    .replace('?', "%3F")
                    .replace('#', "%23");
                format!("sqlite://{escaped}?mode=rwc")
            }
            DbUrl::Postgres(url) | DbUrl::MySql(url) => url.clone(),
        }
    }
}

/// Never prints a password that a server URL may carry.
impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            DbUrl::Postgres(url) | DbUrl::MySql(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
                match rest.rsplit_once('@') {
                    Some((credentials, host)) => {
                        let user = credentials.split(':').next().unwrap_or("");
                        write!(f, "{scheme}://{user}:<redacted>@{host}")
                    }
                    None => f.write_str(url),
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    /// The `n`th (1-based) bind placeholder.
    fn placeholders(self, first: usize, count: usize) -> String {
        let mut out = String::with_capacity(count * 5);
        self.write_placeholders(&mut out, first, count);
        out
    }

    /// `count` placeholders from number `first` on, comma-separated, appended to `out`.
    fn write_placeholders(self, out: &mut String, first: usize, count: usize) {
        use std::fmt::Write as _;
        for n in first..first + count {
            if n > first {
                out.push_str(", ");
            }
            match self {
                Dialect::Postgres => {
                    let _ = write!(out, "${n}");
                }
                Dialect::Sqlite | Dialect::MySql => out.push('?'),
            }
        }
    }
}

/// Failures of the store. Database URLs in messages have their password
/// redacted.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("db_url: {0}")]
    Url(#[from] UrlError),
    #[error("table: {0}")]
    TableName(String),
    #[error("cannot open {url}: {source}")]
    Connect { url: DbUrl, source: sqlx::Error },
    #[error("table {table:?} does not exist in {url} (create it with Kamailio's uac-create.sql)")]
    MissingTable {
        table: String,
        url: DbUrl,
        source: sqlx::Error,
    },
    #[error("{what} on table {table:?}: {source}")]
    Query {
        what: &'static str,
        table: String,
        source: sqlx::Error,
    },
    #[error("table {0:?} has no contact_user column (uacreg version 6) to store contact_user in")]
    NoContactUserColumn(String),
    #[error("invalid record: {0}")]
    Invalid(#[from] RowError),
    #[error("live_state_log: cannot open {path}: {source}")]
    StateLog {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A `uacreg` row that was not loaded, and why. `Display` is the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    /// The row's `id` column.
    pub id: i64,
    /// The row's `l_uuid` (may be empty: that can be the reason).
    pub l_uuid: String,
    pub reason: RowError,
}

impl fmt::Display for SkippedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "row id={} l_uuid={:?} skipped: {}",
            self.id, self.l_uuid, self.reason
        )
    }
}

/// The valid rows of a `uacreg` table, unique by l_uuid, and the skipped ones.
#[derive(Debug, Default)]
pub struct LoadedRows {
    pub accounts: Vec<Account>,
    pub skipped: Vec<SkippedRow>,
}

/// Columns of Kamailio's uacreg version 5 after `id`, in schema order.
const V5_COLUMNS: [&str; 15] = [
    "l_uuid",
    "l_username",
    "l_domain",
    "r_username",
    "r_domain",
    "realm",
    "auth_username",
    "auth_password",
    "auth_ha1",
    "auth_proxy",
    "expires",
    "flags",
    "reg_delay",
    "contact_addr",
    "socket",
];

/// Columns of the live-state table after (tenant, l_uuid).
const STATE_COLUMNS: [&str; 10] = [
    "row_hash",
    "flags",
    "expires",
    "registered_until",
    "call_id",
    "cseq",
    "last_status",
    "last_reason",
    "failures",
    "next_due_ms",
];

/// Kamailio 5.6's `uac-create.sql` for SQLite (plus its `version` table),
/// used when the embedded default database has no uacreg table yet.
fn kamailio_sqlite_ddl(table: &str) -> [String; 3] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (
    id INTEGER PRIMARY KEY NOT NULL,
    l_uuid VARCHAR(64) DEFAULT '' NOT NULL,
    l_username VARCHAR(64) DEFAULT '' NOT NULL,
    l_domain VARCHAR(64) DEFAULT '' NOT NULL,
    r_username VARCHAR(64) DEFAULT '' NOT NULL,
    r_domain VARCHAR(64) DEFAULT '' NOT NULL,
    realm VARCHAR(64) DEFAULT '' NOT NULL,
    auth_username VARCHAR(64) DEFAULT '' NOT NULL,
    auth_password VARCHAR(64) DEFAULT '' NOT NULL,
    auth_ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    auth_proxy VARCHAR(255) DEFAULT '' NOT NULL,
    expires INTEGER DEFAULT 0 NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    reg_delay INTEGER DEFAULT 0 NOT NULL,
    contact_addr VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT {table}_l_uuid_idx UNIQUE (l_uuid)
)"
        ),
        "CREATE TABLE IF NOT EXISTS version (
    id INTEGER PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
)"
        .to_owned(),
        format!(
            "INSERT INTO version (table_name, table_version) SELECT '{table}', 5 \
             WHERE NOT EXISTS (SELECT 1 FROM version WHERE table_name = '{table}')"
        ),
    ]
}

fn state_table_ddl(state_table: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {state_table} (
    tenant VARCHAR(64) NOT NULL,
    l_uuid VARCHAR(255) NOT NULL,
    row_hash BIGINT NOT NULL,
    flags INTEGER NOT NULL,
    expires BIGINT NOT NULL,
    registered_until BIGINT NOT NULL,
    call_id VARCHAR(255) NOT NULL,
    cseq BIGINT NOT NULL,
    last_status INTEGER NOT NULL,
    last_reason VARCHAR(255) NOT NULL,
    failures BIGINT NOT NULL,
    next_due_ms BIGINT NOT NULL,
    PRIMARY KEY (tenant, l_uuid)
)"
    )
}

/// Gives the record `l_uuid` a persisted `state` when its row is the one the state
/// was saved for (same content hash: an edited row starts over). Returns its id then.
fn restore_state(
    table: &mut RegistrationTable,
    l_uuid: &str,
    row_hash: i64,
    state: LiveState,
) -> Option<RecordId> {
    let id = table.find_uuid(l_uuid)?;
    let (account, _) = table.get(id)?;
    if account.content_hash() != row_hash {
        return None;
    }
    table.set_state(id, state).ok()?;
    Some(id)
}

/// Where the tenant's live-state log lives: `live_state_log` when set, else beside
/// an SQLite database (`<db>.<tenant>.live-state.log`); a server database has none
/// unless one is set.
fn state_log_path(config: &RegistrationsConfig, url: &DbUrl, tenant: &str) -> Option<PathBuf> {
    if let Some(path) = &config.live_state_log {
        return Some(PathBuf::from(path));
    }
    let DbUrl::Sqlite(db) = url else { return None };
    let tenant: String = tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = db.clone().into_os_string();
    name.push(format!(".{tenant}.live-state.log"));
    Some(PathBuf::from(name))
}

/// One tenant's registration store.
pub struct RegistrationStore {
    pool: AnyPool,
    url: DbUrl,
    dialect: Dialect,
    tenant: String,
    table: String,
    state_table: String,
    has_contact_user: bool,
    /// Live-state changes not yet in the database (see [`StateLog`]).
    state_log: Option<StateLog>,
    /// An append failed and was logged; the next failure is not, until one succeeds.
    state_log_failing: std::sync::atomic::AtomicBool,
    /// The live-state upsert for 1, 2, 4, … 64 and [`SAVE_CHUNK`] rows, built once: a flush
    /// writes its rows in chunks of these sizes, so the database prepares each statement
    /// once instead of a new one (of up to 1,200 parameters) every second.
    upserts: [std::sync::OnceLock<Box<str>>; UPSERT_SIZES.len()],
}

/// The row counts of the cached live-state upserts (see `RegistrationStore::upserts`).
const UPSERT_SIZES: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, SAVE_CHUNK];

impl fmt::Debug for RegistrationStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationStore")
            .field("url", &self.url)
            .field("tenant", &self.tenant)
            .field("table", &self.table)
            .field("state_table", &self.state_table)
            .field("has_contact_user", &self.has_contact_user)
            .field("state_log", &self.state_log.as_ref().map(StateLog::path))
            .finish()
    }
}

/// Reads a text column; NULL (allowed by hand-made schemas) reads as empty.
fn text(row: &AnyRow, column: &'static str) -> Result<String, RowError> {
    row.try_get::<Option<String>, _>(column)
        .map(Option::unwrap_or_default)
        .map_err(|e| RowError::Unreadable {
            column,
            why: e.to_string(),
        })
}

fn integer(row: &AnyRow, column: &'static str) -> Result<i64, RowError> {
    row.try_get::<Option<i64>, _>(column)
        .map(Option::unwrap_or_default)
        .map_err(|e| RowError::Unreadable {
            column,
            why: e.to_string(),
        })
}

fn record_from_row(row: &AnyRow, has_contact_user: bool) -> Result<Record, RowError> {
    Record {
        l_uuid: text(row, "l_uuid")?,
        l_username: text(row, "l_username")?,
        l_domain: text(row, "l_domain")?,
        r_username: text(row, "r_username")?,
        r_domain: text(row, "r_domain")?,
        realm: text(row, "realm")?,
        auth_username: text(row, "auth_username")?,
        auth_password: Secret::new(text(row, "auth_password")?),
        auth_ha1: Secret::new(text(row, "auth_ha1")?),
        auth_proxy: text(row, "auth_proxy")?,
        expires: column_u32("expires", integer(row, "expires")?)?,
        flags: column_u32("flags", integer(row, "flags")?)?,
        reg_delay: column_u32("reg_delay", integer(row, "reg_delay")?)?,
        contact_addr: text(row, "contact_addr")?,
        socket: text(row, "socket")?,
        contact_user: if has_contact_user {
            text(row, "contact_user")?
        } else {
            String::new()
        },
    }
    .validated()
}

fn state_from_row(row: &AnyRow) -> Result<(String, i64, LiveState), RowError> {
    let unsigned = |column: &'static str| -> Result<u64, RowError> {
        let value = integer(row, column)?;
        u64::try_from(value).map_err(|_| RowError::Negative { column, value })
    };
    let state = LiveState {
        flags: column_u32("flags", integer(row, "flags")?)?,
        expires: column_u32("expires", integer(row, "expires")?)?,
        registered_until: unsigned("registered_until")?,
        call_id: text(row, "call_id")?,
        cseq: column_u32("cseq", integer(row, "cseq")?)?,
        last_status: u16::try_from(integer(row, "last_status")?).unwrap_or(0),
        last_reason: text(row, "last_reason")?,
        failures: column_u32("failures", integer(row, "failures")?)?,
        next_due_ms: unsigned("next_due_ms")?,
    };
    Ok((text(row, "l_uuid")?, integer(row, "row_hash")?, state))
}

impl RegistrationStore {
    /// Connects, creates (SQLite) or checks the uacreg table, and creates the
    /// live-state table `<table>_siphost_state` if absent.
    pub async fn open(
        config: &RegistrationsConfig,
        tenant: &str,
    ) -> Result<RegistrationStore, StoreError> {
        sqlx::any::install_default_drivers();
        let url = DbUrl::parse(&config.db_url)?;
        validate_table_name(&config.table).map_err(StoreError::TableName)?;
        let dialect = url.dialect();
        if let DbUrl::Sqlite(path) = &url
            && let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Connect {
                url: url.clone(),
                source: sqlx::Error::Io(e),
            })?;
        }
        let mut options = AnyPoolOptions::new()
            .max_connections(if dialect == Dialect::Sqlite { 1 } else { 4 })
            .acquire_timeout(Duration::from_secs(10));
        if dialect == Dialect::Sqlite {
            // Durable against a killed process (not a power cut) at a fraction
            // of the cost of FULL.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool =
            options
                .connect(&url.driver_url())
                .await
                .map_err(|source| StoreError::Connect {
                    url: url.clone(),
                    source,
                })?;
        let state_log = match state_log_path(config, &url, tenant) {
            Some(path) => Some(
                StateLog::open(&path).map_err(|source| StoreError::StateLog { path, source })?,
            ),
            None => None,
        };
        let table = config.table.clone();
        let store = RegistrationStore {
            pool,
            dialect,
            tenant: tenant.to_owned(),
            state_table: format!("{table}_siphost_state"),
            table,
            has_contact_user: false,
            url,
            state_log,
            state_log_failing: Default::default(),
            upserts: Default::default(),
        };
        store.prepare().await
    }

    async fn prepare(mut self) -> Result<RegistrationStore, StoreError> {
        if self.dialect == Dialect::Sqlite {
            self.exec("set journal mode", "PRAGMA journal_mode = WAL")
                .await?;
            for statement in kamailio_sqlite_ddl(&self.table) {
                self.exec("create uacreg table", &statement).await?;
            }
        }
        let probe = format!("SELECT l_uuid FROM {} WHERE 1 = 0", self.table);
        if let Err(source) = sqlx::query(&probe).fetch_all(&self.pool).await {
            return Err(StoreError::MissingTable {
                table: self.table,
                url: self.url,
                source,
            });
        }
        let probe = format!("SELECT contact_user FROM {} WHERE 1 = 0", self.table);
        self.has_contact_user = sqlx::query(&probe).fetch_all(&self.pool).await.is_ok();
        let ddl = state_table_ddl(&self.state_table);
        self.exec("create live-state table", &ddl).await?;
        Ok(self)
    }

    async fn exec(&self, what: &'static str, sql: &str) -> Result<(), StoreError> {
        sqlx::query(sql)
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|source| self.query_error(what, source))
    }

    fn query_error(&self, what: &'static str, source: sqlx::Error) -> StoreError {
        StoreError::Query {
            what,
            table: self.table.clone(),
            source,
        }
    }

    /// Appends a changed live state to the log, when there is one. A failed append
    /// is logged; the database write within a second still keeps the change.
    pub fn log_state(&self, account: &Account, state: &LiveState) {
        use std::sync::atomic::Ordering;
        let Some(log) = &self.state_log else { return };
        match log.append(account.l_uuid(), account.content_hash(), state) {
            Ok(()) => self.state_log_failing.store(false, Ordering::Relaxed),
            Err(e) => {
                if !self.state_log_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        tenant = &*self.tenant,
                        path = %log.path().display(),
                        "cannot append to the live-state log (a kill now loses up to a second of outcomes): {e}"
                    );
                }
            }
        }
    }

    /// Empties the log once the database holds every change in it.
    pub fn clear_state_log(&self) {
        if let Some(log) = &self.state_log
            && let Err(e) = log.clear()
        {
            tracing::warn!(
                tenant = &*self.tenant,
                path = %log.path().display(),
                "cannot empty the live-state log: {e}"
            );
        }
    }

    /// Replays the log over a freshly loaded `table`: entries whose row is
    /// unchanged take effect in order, the last one winning. Returns the records
    /// changed, which are still to be written to the database.
    pub fn replay_state_log(&self, table: &mut RegistrationTable) -> HashSet<RecordId> {
        let Some(log) = &self.state_log else {
            return HashSet::new();
        };
        let replay = match log.read() {
            Ok(replay) => replay,
            Err(e) => {
                tracing::warn!(
                    tenant = &*self.tenant,
                    path = %log.path().display(),
                    "cannot read the live-state log: {e}"
                );
                return HashSet::new();
            }
        };
        let changed: HashSet<RecordId> = replay
            .entries
            .into_iter()
            .filter_map(|e| restore_state(table, &e.l_uuid, e.row_hash, e.state))
            .collect();
        if !changed.is_empty() || replay.unreadable > 0 {
            tracing::info!(
                tenant = &*self.tenant,
                path = %log.path().display(),
                records = changed.len(),
                unreadable_lines = replay.unreadable,
                "live state replayed from the log"
            );
        }
        changed
    }

    /// Whether the table has version 6's `contact_user` column.
    pub fn has_contact_user(&self) -> bool {
        self.has_contact_user
    }

    /// Name of the live-state table.
    pub fn state_table(&self) -> &str {
        &self.state_table
    }

    /// Reads every uacreg row, page by page. Invalid rows and repeated l_uuids
    /// are skipped, each with a log line naming the row and why.
    pub async fn load_rows(&self) -> Result<LoadedRows, StoreError> {
        let mut columns = V5_COLUMNS.join(", ");
        if self.has_contact_user {
            columns.push_str(", contact_user");
        }
        let sql = format!(
            "SELECT id, {columns} FROM {} WHERE id > {} ORDER BY id LIMIT {LOAD_PAGE}",
            self.table,
            self.dialect.placeholders(1, 1),
        );
        let mut loaded = LoadedRows::default();
        let mut seen = HashSet::new();
        let mut after = i64::MIN;
        loop {
            let rows = sqlx::query(&sql)
                .bind(after)
                .fetch_all(&self.pool)
                .await
                .map_err(|source| self.query_error("read rows", source))?;
            for row in &rows {
                let id = integer(row, "id").map_err(|e| {
                    self.query_error("read rows", sqlx::Error::Decode(e.to_string().into()))
                })?;
                after = id;
                let checked = record_from_row(row, self.has_contact_user).and_then(|record| {
                    if seen.insert(record.l_uuid.clone()) {
                        Ok(Account::new(&record)?)
                    } else {
                        Err(RowError::DuplicateUuid(record.l_uuid))
                    }
                });
                match checked {
                    Ok(account) => loaded.accounts.push(account),
                    Err(reason) => {
                        let skipped = SkippedRow {
                            id,
                            l_uuid: text(row, "l_uuid").unwrap_or_default(),
                            reason,
                        };
                        tracing::warn!(table = %self.table, "{skipped}");
                        loaded.skipped.push(skipped);
                    }
                }
            }
            if (rows.len() as i64) < LOAD_PAGE {
                return Ok(loaded);
            }
        }
    }

    /// Loads the table with the persisted live state of every row whose
    /// content is unchanged since the state was saved; other rows start over.
    /// State rows of vanished or edited rows are deleted.
    pub async fn load(&self) -> Result<(RegistrationTable, Vec<SkippedRow>), StoreError> {
        let rows = self.load_rows().await?;
        let mut table = RegistrationTable::new();
        table.reload(rows.accounts, LiveState::initial);
        let columns = STATE_COLUMNS.join(", ");
        let sql = format!(
            "SELECT l_uuid, {columns} FROM {} WHERE tenant = {} AND l_uuid > {} \
             ORDER BY l_uuid LIMIT {LOAD_PAGE}",
            self.state_table,
            self.dialect.placeholders(1, 1),
            self.dialect.placeholders(2, 1),
        );
        let mut stale = Vec::new();
        let mut after = String::new();
        loop {
            let page = sqlx::query(&sql)
                .bind(&self.tenant)
                .bind(&after)
                .fetch_all(&self.pool)
                .await
                .map_err(|source| self.query_error("read live state", source))?;
            for row in &page {
                // Advance first: a page of unreadable rows must not be read again.
                if let Ok(l_uuid) = text(row, "l_uuid") {
                    after = l_uuid;
                }
                let (l_uuid, row_hash, state) = match state_from_row(row) {
                    Ok(parsed) => parsed,
                    Err(reason) => {
                        tracing::warn!(table = %self.state_table, l_uuid = %after, "live state dropped: {reason}");
                        stale.push(after.clone());
                        continue;
                    }
                };
                if restore_state(&mut table, &l_uuid, row_hash, state).is_none() {
                    stale.push(l_uuid);
                }
            }
            if (page.len() as i64) < LOAD_PAGE {
                break;
            }
        }
        self.delete_states(&stale).await?;
        Ok((table, rows.skipped))
    }

    /// Re-reads the table into `table`: unchanged rows keep their live state,
    /// edited rows start over, vanished rows are removed (their persisted
    /// state too).
    pub async fn reload(
        &self,
        table: &mut RegistrationTable,
    ) -> Result<(ReloadDiff, Vec<SkippedRow>), StoreError> {
        let rows = self.load_rows().await?;
        let diff = table.reload(rows.accounts, LiveState::initial);
        let removed: Vec<String> = diff
            .removed
            .iter()
            .map(|(_, uuid, _)| uuid.clone())
            .collect();
        self.delete_states(&removed).await?;
        Ok((diff, rows.skipped))
    }

    /// Persists the live state of `ids` in one transaction (upsert by tenant
    /// and l_uuid). Ids no longer in the table are ignored.
    /// The live-state upsert of `rows` rows.
    fn upsert_sql(&self, rows: usize) -> Box<str> {
        let per_row = 2 + STATE_COLUMNS.len();
        let mut names = vec!["tenant", "l_uuid"];
        names.extend(STATE_COLUMNS);
        let update = match self.dialect {
            Dialect::MySql => format!(
                "ON DUPLICATE KEY UPDATE {}",
                STATE_COLUMNS
                    .map(|c| format!("{c} = VALUES({c})"))
                    .join(", ")
            ),
            Dialect::Sqlite | Dialect::Postgres => format!(
                "ON CONFLICT (tenant, l_uuid) DO UPDATE SET {}",
                STATE_COLUMNS
                    .map(|c| format!("{c} = excluded.{c}"))
                    .join(", ")
            ),
        };
        let mut values = String::with_capacity(rows * per_row * 5);
        for i in 0..rows {
            values.push_str(if i == 0 { "(" } else { ", (" });
            self.dialect
                .write_placeholders(&mut values, 1 + i * per_row, per_row);
            values.push(')');
        }
        format!(
            "INSERT INTO {} ({}) VALUES {values} {update}",
            self.state_table,
            names.join(", ")
        )
        .into_boxed_str()
    }

    pub async fn save_states(
        &self,
        table: &RegistrationTable,
        ids: &[RecordId],
    ) -> Result<(), StoreError> {
        let present: Vec<_> = ids.iter().filter_map(|&id| table.get(id)).collect();
        if present.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|source| self.query_error("save live state", source))?;
        let mut rest = present.as_slice();
        while !rest.is_empty() {
            // The largest cached size that fits: a full chunk, then the remainder in powers
            // of two.
            let (slot, size) = UPSERT_SIZES
                .iter()
                .copied()
                .enumerate()
                .rev()
                .find(|&(_, size)| size <= rest.len())
                .unwrap_or((0, 1));
            let (chunk, later) = rest.split_at(size);
            rest = later;
            let sql = self.upserts[slot].get_or_init(|| self.upsert_sql(size));
            let mut query = sqlx::query(sql);
            for (account, state) in chunk {
                query = query
                    .bind(self.tenant.as_str())
                    .bind(account.l_uuid())
                    .bind(account.content_hash())
                    .bind(i64::from(state.flags))
                    .bind(i64::from(state.expires))
                    .bind(saturating_i64(state.registered_until))
                    .bind(state.call_id.as_str())
                    .bind(i64::from(state.cseq))
                    .bind(i64::from(state.last_status))
                    .bind(state.last_reason.as_str())
                    .bind(i64::from(state.failures))
                    .bind(saturating_i64(state.next_due_ms));
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(|source| self.query_error("save live state", source))?;
        }
        tx.commit()
            .await
            .map_err(|source| self.query_error("save live state", source))
    }

    /// Forgets the persisted state of these l_uuids.
    pub async fn delete_states(&self, l_uuids: &[String]) -> Result<(), StoreError> {
        if l_uuids.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|source| self.query_error("delete live state", source))?;
        for chunk in l_uuids.chunks(SAVE_CHUNK) {
            let sql = format!(
                "DELETE FROM {} WHERE tenant = {} AND l_uuid IN ({})",
                self.state_table,
                self.dialect.placeholders(1, 1),
                self.dialect.placeholders(2, chunk.len())
            );
            let mut query = sqlx::query(&sql).bind(self.tenant.clone());
            for l_uuid in chunk {
                query = query.bind(l_uuid.clone());
            }
            query
                .execute(&mut *tx)
                .await
                .map_err(|source| self.query_error("delete live state", source))?;
        }
        tx.commit()
            .await
            .map_err(|source| self.query_error("delete live state", source))
    }

    /// Inserts a row into the uacreg table (a persistent `uac.reg_add`).
    pub async fn insert_row(&self, record: &Record) -> Result<(), StoreError> {
        let record = record.clone().validated()?;
        if !record.contact_user.is_empty() && !self.has_contact_user {
            return Err(StoreError::NoContactUserColumn(self.table.clone()));
        }
        let mut columns = V5_COLUMNS.to_vec();
        if self.has_contact_user {
            columns.push("contact_user");
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.table,
            columns.join(", "),
            self.dialect.placeholders(1, columns.len())
        );
        let mut query = sqlx::query(&sql)
            .bind(record.l_uuid)
            .bind(record.l_username)
            .bind(record.l_domain)
            .bind(record.r_username)
            .bind(record.r_domain)
            .bind(record.realm)
            .bind(record.auth_username)
            .bind(record.auth_password.expose().to_owned())
            .bind(record.auth_ha1.expose().to_owned())
            .bind(record.auth_proxy)
            .bind(i64::from(record.expires))
            .bind(i64::from(record.flags))
            .bind(i64::from(record.reg_delay))
            .bind(record.contact_addr)
            .bind(record.socket);
        if self.has_contact_user {
            query = query.bind(record.contact_user);
        }
        query
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|source| self.query_error("insert row", source))
    }

    /// Deletes the uacreg row and the live state of `l_uuid`; whether a row
    /// existed.
    pub async fn delete_row(&self, l_uuid: &str) -> Result<bool, StoreError> {
        let sql = format!(
            "DELETE FROM {} WHERE l_uuid = {}",
            self.table,
            self.dialect.placeholders(1, 1)
        );
        let result = sqlx::query(&sql)
            .bind(l_uuid.to_owned())
            .execute(&self.pool)
            .await
            .map_err(|source| self.query_error("delete row", source))?;
        self.delete_states(&[l_uuid.to_owned()]).await?;
        Ok(result.rows_affected() > 0)
    }

    /// Closes the connections.
    pub async fn close(self) {
        self.pool.close().await;
    }
}

fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_our_and_kamailios_forms() {
        assert_eq!(
            DbUrl::parse("sqlite:///var/lib/siphost/uac.db"),
            Ok(DbUrl::Sqlite("/var/lib/siphost/uac.db".into()))
        );
        assert_eq!(
            DbUrl::parse("sqlite:////var/lib/kamailio/kamailio.db"),
            Ok(DbUrl::Sqlite("/var/lib/kamailio/kamailio.db".into()))
        );
        assert_eq!(
            DbUrl::parse("sqlite://uac.db"),
            Ok(DbUrl::Sqlite("uac.db".into()))
        );
        assert_eq!(DbUrl::parse("sqlite://"), Err(UrlError::NoPath));
        assert!(matches!(
            DbUrl::parse("mysql://kamailio:kamailiorw@localhost/kamailio"),
            Ok(DbUrl::MySql(_))
        ));
        assert!(matches!(
            DbUrl::parse("postgresql://u@h/db"),
            Ok(DbUrl::Postgres(_))
        ));
        assert_eq!(DbUrl::parse("oracle://x"), Err(UrlError::Scheme));
    }

    #[test]
    fn printed_urls_hide_the_password() {
        let url = DbUrl::parse("mysql://kamailio:kamailiorw@localhost/kamailio").expect("url");
        assert_eq!(
            url.to_string(),
            "mysql://kamailio:<redacted>@localhost/kamailio"
        );
        assert!(!format!("{url:?}").contains("kamailiorw"));
    }

    #[test]
    fn sqlite_paths_are_escaped_for_the_driver() {
        let url = DbUrl::Sqlite("/tmp/a?b#c%d.db".into());
        assert_eq!(url.driver_url(), "sqlite:///tmp/a%3Fb%23c%25d.db?mode=rwc");
    }
}
