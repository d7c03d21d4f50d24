//! Inbound digest credentials from a table of the tenant's store database (SQLite,
//! PostgreSQL, MariaDB): read whole into memory and re-read now and then, so a check
//! never waits on the database.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustc_hash::FxHashMap;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use super::config::{CredentialsTableConfig, EndpointConfig};
use super::{ConfigCredentials, CredentialStore, Secret, StoredCredentials};
use crate::config::Config;
use crate::registrations::DbUrl;
use crate::registrations::config::validate_table_name;
use crate::registrations::store::UrlError;

/// The columns read, in this order. `endpoint` may be NULL (then the username names it).
pub const COLUMNS: [&str; 5] = ["username", "password", "ha1", "ha1_sha256", "endpoint"];

/// Why a credentials table cannot be used. URLs in messages have their password redacted.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("db_url: {0}")]
    Url(#[from] UrlError),
    #[error("db_url: not set, and the tenant has no [tenant.registrations] db_url to share")]
    NoDbUrl,
    #[error("table: {0}")]
    TableName(String),
    #[error("cannot open {url}: {source}")]
    Connect { url: DbUrl, source: sqlx::Error },
    #[error(
        "table {table:?} with columns (username, password, ha1, ha1_sha256, endpoint) \
         cannot be read in {url}: {source}"
    )]
    MissingTable {
        table: String,
        url: DbUrl,
        source: sqlx::Error,
    },
    #[error("reading table {table:?}: {source}")]
    Query { table: String, source: sqlx::Error },
}

/// A row that was not loaded, and why (logged, never fatal: one bad row must not lock
/// every endpoint out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRow {
    pub username: String,
    pub why: &'static str,
}

impl fmt::Display for SkippedRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "credentials row username={:?} skipped: {}",
            self.username, self.why
        )
    }
}

/// Credentials by username, as last read.
pub type Rows = HashMap<String, StoredCredentials>;

/// One tenant's credentials table.
pub struct CredentialTable {
    pool: AnyPool,
    url: DbUrl,
    table: String,
}

impl fmt::Debug for CredentialTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredentialTable")
            .field("url", &self.url)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

fn text(row: &AnyRow, column: &str) -> Option<String> {
    row.try_get::<Option<String>, _>(column)
        .ok()
        .flatten()
        .filter(|s| !s.is_empty())
}

fn is_hex(value: &str, len: usize) -> bool {
    value.len() == len && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One row's credentials, checked as `[[tenant.access.endpoint]]` entries are.
fn credentials_from_row(row: &AnyRow) -> Result<(String, StoredCredentials), SkippedRow> {
    let username = text(row, "username").unwrap_or_default();
    let skip = |why| SkippedRow {
        username: username.clone(),
        why,
    };
    if username.is_empty() {
        return Err(skip("empty username"));
    }
    let (password, ha1, ha1_sha256) = (
        text(row, "password"),
        text(row, "ha1"),
        text(row, "ha1_sha256"),
    );
    let secret = match (password, ha1, ha1_sha256) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(skip("both a password and an HA1"));
        }
        (Some(password), None, None) => Secret::Password(password),
        (None, None, None) => return Err(skip("no password, ha1 or ha1_sha256")),
        (None, md5, sha256) => {
            if md5.as_deref().is_some_and(|h| !is_hex(h, 32)) {
                return Err(skip("ha1 is not 32 hex digits"));
            }
            if sha256.as_deref().is_some_and(|h| !is_hex(h, 64)) {
                return Err(skip("ha1_sha256 is not 64 hex digits"));
            }
            Secret::Ha1 { md5, sha256 }
        }
    };
    let endpoint = text(row, "endpoint").unwrap_or_else(|| username.clone());
    Ok((
        username,
        StoredCredentials {
            endpoint: Arc::from(endpoint.as_str()),
            secret,
        },
    ))
}

impl CredentialTable {
    /// Connects and checks that the table has the columns. An SQLite file is not created:
    /// a wrong path is an error, not an empty table.
    pub async fn open(db_url: &str, table: &str) -> Result<CredentialTable, TableError> {
        sqlx::any::install_default_drivers();
        let url = DbUrl::parse(db_url)?;
        validate_table_name(table).map_err(TableError::TableName)?;
        let driver_url = match &url {
            DbUrl::Sqlite(path) => {
                let path = path.to_string_lossy();
                let escaped = path
                    .replace('%', "%25")
                    .replace('?', "%3F")
                    .replace('#', "%23");
                format!("sqlite://{escaped}?mode=rw")
            }
            DbUrl::Postgres(u) | DbUrl::MySql(u) => u.clone(),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&driver_url)
            .await
            .map_err(|source| TableError::Connect {
                url: url.clone(),
                source,
            })?;
        let probe = format!("SELECT {} FROM {table} WHERE 1 = 0", COLUMNS.join(", "));
        if let Err(source) = sqlx::query(&probe).fetch_all(&pool).await {
            return Err(TableError::MissingTable {
                table: table.to_owned(),
                url,
                source,
            });
        }
        Ok(CredentialTable {
            pool,
            url,
            table: table.to_owned(),
        })
    }

    /// Every usable row by username, and the rows skipped. A username given twice keeps
    /// its first row.
    pub async fn load(&self) -> Result<(Rows, Vec<SkippedRow>), TableError> {
        let sql = format!("SELECT {} FROM {}", COLUMNS.join(", "), self.table);
        let rows = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await
            .map_err(|source| TableError::Query {
                table: self.table.clone(),
                source,
            })?;
        let mut loaded = Rows::with_capacity(rows.len());
        let mut skipped = Vec::new();
        for row in &rows {
            match credentials_from_row(row) {
                Ok((username, credentials)) => match loaded.entry(username) {
                    Entry::Occupied(first) => skipped.push(SkippedRow {
                        username: first.key().clone(),
                        why: "username given again",
                    }),
                    Entry::Vacant(slot) => {
                        slot.insert(credentials);
                    }
                },
                Err(skip) => skipped.push(skip),
            }
        }
        Ok((loaded, skipped))
    }

    /// Loads into `rows`, logging skipped rows; the rows stay as they were on an error.
    pub async fn reload_into(&self, tenant: &str, rows: &ArcSwap<Rows>) -> Result<(), TableError> {
        let (loaded, skipped) = self.load().await?;
        for skip in &skipped {
            tracing::warn!(tenant, table = %self.table, "{skip}");
        }
        tracing::debug!(tenant, table = %self.table, rows = loaded.len(), "credentials loaded");
        rows.store(Arc::new(loaded));
        Ok(())
    }
}

/// Credentials of the config's endpoints first, then of the table's rows.
pub struct TableCredentials {
    config: ConfigCredentials,
    rows: Arc<ArcSwap<Rows>>,
}

impl TableCredentials {
    pub fn new(endpoints: &[EndpointConfig], rows: Arc<ArcSwap<Rows>>) -> TableCredentials {
        TableCredentials {
            config: ConfigCredentials::new(endpoints),
            rows,
        }
    }
}

impl CredentialStore for TableCredentials {
    fn lookup(&self, username: &str, realm: &str) -> Option<StoredCredentials> {
        self.config
            .lookup(username, realm)
            .or_else(|| self.rows.load().get(username).cloned())
    }

    fn identifies_by_username(&self) -> bool {
        true
    }
}

/// Each tenant's credential rows (tenants with `[tenant.access.credentials]`), kept
/// fresh by a task per tenant.
#[derive(Debug, Default, Clone)]
pub struct CredentialTables {
    by_tenant: FxHashMap<String, Arc<ArcSwap<Rows>>>,
}

/// A tenant's table that could not be opened or read at start.
#[derive(Debug, thiserror::Error)]
#[error("tenant {tenant:?}: access.credentials.{source}")]
pub struct OpenError {
    pub tenant: String,
    pub source: TableError,
}

impl CredentialTables {
    /// Opens and reads every tenant's table (an error stops the start), then re-reads
    /// each every `reload_s` seconds on the current tokio runtime.
    pub async fn open(config: &Config) -> Result<CredentialTables, OpenError> {
        let mut tables = CredentialTables::default();
        for tenant in &config.tenant {
            let Some(credentials) = tenant.access.as_ref().and_then(|a| a.credentials.as_ref())
            else {
                continue;
            };
            let fail = |source| OpenError {
                tenant: tenant.name.clone(),
                source,
            };
            let db_url = credentials
                .db_url(tenant.registrations.as_ref())
                .ok_or_else(|| fail(TableError::NoDbUrl))?;
            let table = CredentialTable::open(db_url, &credentials.table)
                .await
                .map_err(fail)?;
            let rows = Arc::new(ArcSwap::from_pointee(Rows::new()));
            table.reload_into(&tenant.name, &rows).await.map_err(fail)?;
            spawn_reload(tenant.name.clone(), table, rows.clone(), credentials);
            tables.by_tenant.insert(tenant.name.clone(), rows);
        }
        Ok(tables)
    }

    /// The rows of `tenant`'s table, if it has one.
    pub fn rows(&self, tenant: &str) -> Option<Arc<ArcSwap<Rows>>> {
        self.by_tenant.get(tenant).cloned()
    }
}

fn spawn_reload(
    tenant: String,
    table: CredentialTable,
    rows: Arc<ArcSwap<Rows>>,
    config: &CredentialsTableConfig,
) {
    if config.reload_s == 0 {
        return;
    }
    let every = Duration::from_secs(config.reload_s);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            if let Err(e) = table.reload_into(&tenant, &rows).await {
                tracing::warn!(
                    tenant,
                    "credentials table not re-read, the last rows stay: {e}"
                );
            }
        }
    });
}
