//! The registration store against real databases: SQLite (a temp file),
//! PostgreSQL and MariaDB (the servers the brief names, overridable with
//! SIPHOST_TEST_POSTGRES_URL / SIPHOST_TEST_MYSQL_URL). Every test uses its own
//! randomly named tables and drops them afterwards.

use rand::Rng;
use siphost::registrations::{
    LiveState, LookupKey, RegistrationStore, Registrations, RegistrationsConfig, RowError,
    SchedulerConfig, flags,
};
use sqlx::AnyPool;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sqlite,
    Postgres,
    MySql,
}

/// One database and a fresh table name in it; drops its tables when done.
struct TestDb {
    kind: Kind,
    url: String,
    table: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    fn new(kind: Kind) -> TestDb {
        let table = format!("uacreg_t{:08x}", rand::rng().random::<u32>());
        let (url, dir) = match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                // Kamailio's four-slash form of an absolute path.
                let url = format!("sqlite:///{}/state/uac.db", dir.path().display());
                (url, Some(dir))
            }
            Kind::Postgres => (
                std::env::var("SIPHOST_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
                None,
            ),
            Kind::MySql => (
                std::env::var("SIPHOST_TEST_MYSQL_URL")
                    .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned()),
                None,
            ),
        };
        TestDb {
            kind,
            url,
            table,
            _dir: dir,
        }
    }

    fn config(&self) -> RegistrationsConfig {
        RegistrationsConfig {
            db_url: self.url.clone(),
            table: self.table.clone(),
            live_state_log: None,
        }
    }

    /// A direct connection for setting up rows as Kamailio's tools would.
    async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        let url = match self.kind {
            Kind::Sqlite => {
                let path = self.url.trim_start_matches("sqlite:///");
                let path = std::path::Path::new("/").join(path.trim_start_matches('/'));
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                format!("sqlite://{}?mode=rwc", path.display())
            }
            _ => self.url.clone(),
        };
        AnyPool::connect(&url)
            .await
            .expect("connect to the test database")
    }

    /// Kamailio 5.6's uac-create.sql for this backend (version 5), with
    /// version 6's contact_user when asked.
    async fn create_kamailio_table(&self, raw: &AnyPool, with_contact_user: bool) {
        let t = &self.table;
        let (id, int) = match self.kind {
            Kind::Sqlite => ("id INTEGER PRIMARY KEY NOT NULL", "INTEGER"),
            Kind::Postgres => ("id SERIAL PRIMARY KEY NOT NULL", "INTEGER"),
            Kind::MySql => (
                "id INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL",
                "INT",
            ),
        };
        let contact_user = if with_contact_user {
            "contact_user VARCHAR(255) DEFAULT '' NOT NULL,"
        } else {
            ""
        };
        let ddl = format!(
            "CREATE TABLE {t} (
    {id},
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
    expires {int} DEFAULT 0 NOT NULL,
    flags {int} DEFAULT 0 NOT NULL,
    reg_delay {int} DEFAULT 0 NOT NULL,
    contact_addr VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(128) DEFAULT '' NOT NULL,
    {contact_user}
    CONSTRAINT {t}_l_uuid_idx UNIQUE (l_uuid)
)"
        );
        sqlx::query(&ddl).execute(raw).await.expect("create uacreg");
    }

    /// Inserts a row the way an operator's SQL would (literal values).
    async fn insert(&self, raw: &AnyPool, columns: &str, values: &str) {
        let sql = format!("INSERT INTO {} ({columns}) VALUES ({values})", self.table);
        sqlx::query(&sql).execute(raw).await.expect("insert row");
    }

    async fn exec(&self, raw: &AnyPool, sql: &str) {
        let sql = sql.replace("$T", &self.table);
        sqlx::query(&sql).execute(raw).await.expect(&sql);
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.kind == Kind::Sqlite {
            return; // the temp dir goes with it
        }
        let (url, table) = (self.url.clone(), self.table.clone());
        // Runs even when the test panicked; a thread of its own because the
        // test's runtime may be gone.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                sqlx::any::install_default_drivers();
                if let Ok(pool) = AnyPool::connect(&url).await {
                    for name in [format!("{table}_siphost_state"), table] {
                        let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
                            .execute(&pool)
                            .await;
                    }
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

const COLUMNS: &str = "l_uuid, l_username, l_domain, r_username, r_domain, realm, auth_username, \
                       auth_password, auth_ha1, auth_proxy, expires, flags, reg_delay, contact_addr, socket";

fn row(uuid: &str, password: &str, ha1: &str, expires: i64, flags: i64) -> String {
    format!(
        "'{uuid}', 'local-{uuid}', 'local.test', 'remote-{uuid}', 'provider.test', 'realm.test', \
         'auth-{uuid}', '{password}', '{ha1}', 'sip:127.0.0.1:5080', {expires}, {flags}, 0, '', ''"
    )
}

async fn reads_a_kamailio_table_as_is(kind: Kind, with_contact_user: bool) {
    let db = TestDb::new(kind);
    let raw = db.raw().await;
    db.create_kamailio_table(&raw, with_contact_user).await;
    db.insert(&raw, COLUMNS, &row("alice", "pw-a", "", 3600, 0))
        .await;
    db.insert(
        &raw,
        COLUMNS,
        &row("bob", "", "0123456789ABCDEF0123456789ABCDEF", 600, 1),
    )
    .await;
    // Rows Kamailio rejects.
    db.insert(&raw, COLUMNS, &row("nocred", "", "", 3600, 0))
        .await;
    db.insert(&raw, COLUMNS, &row("badha1", "", "xyz", 3600, 0))
        .await;
    db.insert(&raw, COLUMNS, &row("negative", "pw", "", -5, 0))
        .await;
    db.insert(&raw, "l_uuid, auth_password", "'bare', 'pw'")
        .await;
    if with_contact_user {
        db.exec(
            &raw,
            "UPDATE $T SET contact_user = 'line-a' WHERE l_uuid = 'alice'",
        )
        .await;
    }

    let store = RegistrationStore::open(&db.config(), "default")
        .await
        .expect("open");
    assert_eq!(store.has_contact_user(), with_contact_user);
    let (table, skipped) = store.load().await.expect("load");

    assert_eq!(table.len(), 2);
    let alice = table.find_uuid("alice").expect("alice loaded");
    let (account, state) = table.get(alice).expect("alice");
    assert_eq!(account.l_username(), "local-alice");
    assert_eq!(account.r_domain(), "provider.test");
    assert_eq!(account.auth_password(), "pw-a");
    assert_eq!(account.expires(), 3600);
    let expected_contact_user = if with_contact_user { "line-a" } else { "" };
    assert_eq!(account.contact_user(), expected_contact_user);
    assert_eq!(state.flags, 0);
    let bob = table.find(LookupKey::RUsername, "remote-bob");
    assert_eq!(bob.len(), 1);
    let (account, state) = table.get(bob[0]).expect("bob");
    assert_eq!(account.auth_ha1(), "0123456789abcdef0123456789abcdef");
    assert_eq!(state.flags, flags::DISABLED, "flags=1 loads disabled");
    assert_eq!(table.counters().regdisabled, 1);

    let reasons: Vec<(&str, &RowError)> = skipped
        .iter()
        .map(|s| (s.l_uuid.as_str(), &s.reason))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("nocred", &RowError::NoCredentials),
            ("badha1", &RowError::BadHa1),
            (
                "negative",
                &RowError::Negative {
                    column: "expires",
                    value: -5
                }
            ),
            ("bare", &RowError::Empty("l_username")),
        ]
    );
    let line = skipped[0].to_string();
    assert!(
        line.contains("l_uuid=\"nocred\"") && line.contains("id="),
        "{line}"
    );
    store.close().await;
    raw.close().await;
}

/// The state of the `n`th record after a 200, distinct per record.
fn online(n: u64) -> LiveState {
    LiveState {
        flags: flags::ONLINE | flags::INIT,
        expires: 3600,
        registered_until: 1_795_000_000 + n,
        call_id: format!("call-{n}@siphost"),
        cseq: 11 + n as u32,
        last_status: 200,
        last_reason: "OK".to_owned(),
        failures: 0,
        next_due_ms: 1_795_000_000_000 + n,
    }
}

async fn live_state_survives_reopening(kind: Kind) {
    let db = TestDb::new(kind);
    let raw = db.raw().await;
    db.create_kamailio_table(&raw, false).await;
    for uuid in ["kept", "edited", "deleted"] {
        db.insert(&raw, COLUMNS, &row(uuid, "pw", "", 3600, 0))
            .await;
    }
    let store = RegistrationStore::open(&db.config(), "tenant-a")
        .await
        .expect("open");
    let (mut table, _) = store.load().await.expect("load");
    let ids: Vec<_> = table.iter().map(|(id, _, _)| id).collect();
    for (n, &id) in ids.iter().enumerate() {
        table.set_state(id, online(n as u64)).expect("set");
    }
    let saved_kept = table
        .get(table.find_uuid("kept").expect("kept"))
        .expect("kept")
        .1
        .clone();
    store.save_states(&table, &ids).await.expect("save");
    // Saved twice: the upsert replaces, it does not duplicate.
    store.save_states(&table, &ids).await.expect("save again");
    store.close().await;

    // A reopened store (a restart) gets the state back.
    let store = RegistrationStore::open(&db.config(), "tenant-a")
        .await
        .expect("reopen");
    let (table, _) = store.load().await.expect("load");
    let kept = table.find_uuid("kept").expect("kept");
    let kept_state = table.get(kept).expect("kept").1.clone();
    assert_eq!(kept_state, saved_kept);
    assert_eq!(table.counters().regactive, 3);
    // Another tenant on the same tables sees none of it.
    let other = RegistrationStore::open(&db.config(), "tenant-b")
        .await
        .expect("open b");
    assert_eq!(
        other.load().await.expect("load b").0.counters().regactive,
        0
    );
    other.close().await;
    store.close().await;

    // Rows edited or deleted while siphost was down.
    db.exec(
        &raw,
        "UPDATE $T SET r_username = 'renamed' WHERE l_uuid = 'edited'",
    )
    .await;
    db.exec(&raw, "DELETE FROM $T WHERE l_uuid = 'deleted'")
        .await;
    let store = RegistrationStore::open(&db.config(), "tenant-a")
        .await
        .expect("reopen");
    let (table, _) = store.load().await.expect("load");
    assert_eq!(table.len(), 2);
    assert_eq!(
        table
            .get(table.find_uuid("kept").expect("kept"))
            .expect("kept")
            .1,
        &kept_state
    );
    let edited = table.find_uuid("edited").expect("edited");
    assert_eq!(
        table.get(edited).expect("edited").1.flags,
        0,
        "edited row starts over"
    );
    let count = format!(
        "SELECT COUNT(*) AS n FROM {} WHERE tenant = 'tenant-a'",
        store.state_table()
    );
    let remaining: i64 = sqlx::Row::get(
        &sqlx::query(&count).fetch_one(&raw).await.expect("count"),
        "n",
    );
    assert_eq!(
        remaining, 1,
        "states of the edited and deleted rows were dropped"
    );
    store.close().await;
    raw.close().await;
}

async fn reload_keeps_unchanged_rows_state(kind: Kind) {
    let db = TestDb::new(kind);
    let raw = db.raw().await;
    db.create_kamailio_table(&raw, false).await;
    for uuid in ["a", "b", "c"] {
        db.insert(&raw, COLUMNS, &row(uuid, "pw", "", 3600, 0))
            .await;
    }
    let store = RegistrationStore::open(&db.config(), "default")
        .await
        .expect("open");
    let (mut table, _) = store.load().await.expect("load");
    let online = LiveState {
        flags: flags::ONLINE | flags::INIT,
        registered_until: 1_795_000_000,
        ..LiveState::default()
    };
    let ids: Vec<_> = table.iter().map(|(id, _, _)| id).collect();
    for &id in &ids {
        table.set_state(id, online.clone()).expect("set");
    }
    store.save_states(&table, &ids).await.expect("save");
    let a = table.find_uuid("a").expect("a");

    db.exec(&raw, "UPDATE $T SET expires = 60 WHERE l_uuid = 'b'")
        .await;
    db.exec(&raw, "DELETE FROM $T WHERE l_uuid = 'c'").await;
    db.insert(&raw, COLUMNS, &row("d", "pw", "", 3600, 0)).await;
    let (diff, skipped) = store.reload(&mut table).await.expect("reload");
    assert!(skipped.is_empty());
    assert_eq!(diff.unchanged, 1);
    assert_eq!(diff.changed.len(), 1);
    assert_eq!(diff.added.len(), 1);
    assert_eq!(diff.removed.len(), 1);
    assert_eq!(diff.removed[0].1, "c");
    assert_eq!(table.find_uuid("a"), Some(a), "unchanged row keeps its id");
    assert_eq!(table.get(a).expect("a").1, &online, "and its live state");
    let b = table.find_uuid("b").expect("b");
    assert_eq!(table.get(b).expect("b").0.expires(), 60);
    assert_eq!(table.get(b).expect("b").1.flags, 0);
    assert_eq!(table.counters().regactive, 1);
    assert_eq!(table.counters().regtotal, 3);
    store.close().await;
    raw.close().await;
}

async fn rows_added_and_removed(kind: Kind) {
    let db = TestDb::new(kind);
    let raw = db.raw().await;
    db.create_kamailio_table(&raw, true).await;
    let store = RegistrationStore::open(&db.config(), "default")
        .await
        .expect("open");
    let (mut table, _) = store.load().await.expect("load");
    let mut record = table_record("added");
    record.contact_user = "line".to_owned();
    store.insert_row(&record).await.expect("insert");
    assert!(store.insert_row(&record).await.is_err(), "l_uuid is unique");
    let (diff, _) = store.reload(&mut table).await.expect("reload");
    assert_eq!(diff.added.len(), 1);
    let id = table.find_uuid("added").expect("added");
    assert_eq!(table.get(id).expect("added").0.to_record(), record);
    assert!(store.delete_row("added").await.expect("delete"));
    assert!(!store.delete_row("added").await.expect("delete again"));
    let (diff, _) = store.reload(&mut table).await.expect("reload");
    assert_eq!(diff.removed.len(), 1);
    assert!(table.is_empty());
    store.close().await;
    raw.close().await;
}

fn table_record(uuid: &str) -> siphost::registrations::Record {
    siphost::registrations::Record {
        l_uuid: uuid.to_owned(),
        l_username: format!("local-{uuid}"),
        l_domain: "local.test".to_owned(),
        r_username: format!("remote-{uuid}"),
        r_domain: "provider.test".to_owned(),
        auth_username: format!("auth-{uuid}"),
        auth_password: siphost::registrations::Secret::new("pw"),
        auth_proxy: "sip:127.0.0.1:5080".to_owned(),
        expires: 3600,
        ..Default::default()
    }
}

#[tokio::test]
async fn sqlite_creates_the_kamailio_table_on_first_start() {
    let db = TestDb::new(Kind::Sqlite);
    let store = RegistrationStore::open(&db.config(), "default")
        .await
        .expect("open creates the file");
    let (table, skipped) = store.load().await.expect("load");
    assert!(table.is_empty() && skipped.is_empty());
    store.close().await;
    let raw = db.raw().await;
    let version: i64 = sqlx::Row::get(
        &sqlx::query(&format!(
            "SELECT table_version FROM version WHERE table_name = '{}'",
            db.table
        ))
        .fetch_one(&raw)
        .await
        .expect("version row"),
        "table_version",
    );
    assert_eq!(version, 5);
    // A second start finds everything in place.
    let store = RegistrationStore::open(&db.config(), "default")
        .await
        .expect("reopen");
    store.close().await;
    raw.close().await;
}

#[tokio::test]
async fn missing_table_on_a_server_is_an_error_naming_it() {
    let db = TestDb::new(Kind::Postgres);
    let err = RegistrationStore::open(&db.config(), "default")
        .await
        .expect_err("no such table");
    assert!(err.to_string().contains(&db.table), "{err}");
}

#[tokio::test]
async fn sqlite_reads_v5() {
    reads_a_kamailio_table_as_is(Kind::Sqlite, false).await;
}
#[tokio::test]
async fn sqlite_reads_v6_contact_user() {
    reads_a_kamailio_table_as_is(Kind::Sqlite, true).await;
}
/// The entries a live-state log file holds (lines that do not read count too).
fn log_lines(path: &std::path::Path) -> usize {
    let replay = siphost::registrations::state_log::read_log(path).expect("the log exists");
    replay.entries.len() + replay.unreadable
}

/// A process killed between two database writes loses no outcome: each change
/// goes to the live-state log at once, and a restart replays it. SQLite keeps
/// the log beside the database by default; a server database where
/// `live_state_log` says.
async fn outcomes_since_the_last_write_survive_a_kill(kind: Kind) {
    let db = TestDb::new(kind);
    let raw = db.raw().await;
    db.create_kamailio_table(&raw, false).await;
    for uuid in ["a", "b"] {
        db.insert(&raw, COLUMNS, &row(uuid, "pw", "", 3600, 0))
            .await;
    }
    let log_dir = tempfile::tempdir().expect("tempdir");
    let mut config = db.config();
    let log_path = match kind {
        Kind::Sqlite => {
            let db_path = db.url.trim_start_matches("sqlite:///");
            std::path::PathBuf::from(format!("{db_path}.tenant-k.live-state.log"))
        }
        Kind::Postgres | Kind::MySql => {
            let path = log_dir.path().join("state/live.log");
            config.live_state_log = Some(path.display().to_string());
            path
        }
    };
    let start = || async {
        let store = RegistrationStore::open(&config, "tenant-k")
            .await
            .expect("open");
        Registrations::load("tenant-k", store, SchedulerConfig::default())
            .await
            .expect("load")
    };
    let service = start().await;
    let (a, _, initial) = service.get_by_uuid("a").expect("a");
    let online = LiveState {
        flags: flags::ONLINE | flags::INIT,
        expires: 3600,
        registered_until: 1_795_003_600,
        call_id: "kept-call@siphost".to_owned(),
        cseq: 12,
        last_status: 200,
        last_reason: "OK".to_owned(),
        failures: 0,
        next_due_ms: 0,
    };
    service
        .registered(a, online.clone(), 3600)
        .expect("registered");
    assert_eq!(
        log_lines(&log_path),
        1,
        "the outcome is in the log before any database write"
    );
    // Killed: no flush, the process is gone.
    drop(service);

    let service = start().await;
    let (_, _, state) = service.get_by_uuid("a").expect("a");
    assert_eq!(
        LiveState {
            next_due_ms: 0,
            ..state.clone()
        },
        online,
        "the restart has the outcome back"
    );
    assert!(state.next_due_ms > 0, "and its refresh scheduled");
    assert_eq!(service.get_by_uuid("b").expect("b").2, initial);
    // The first flush writes it to the database and empties the log.
    service.flush().await;
    assert_eq!(log_lines(&log_path), 0);
    drop(service);
    std::fs::remove_file(&log_path).expect("remove the log");
    let service = start().await;
    assert_eq!(
        service.get_by_uuid("a").expect("a").2,
        state,
        "from the database"
    );
    raw.close().await;
}

/// More rows than one statement holds (100), and a remainder that is not a power of two:
/// the flush writes them as chunks of 100, 100, 32, 4 and 1 rows, each statement built once,
/// and every row's state comes back after a reopen, saved twice or not.
async fn many_states_are_saved_in_chunks(kind: Kind) {
    let db = TestDb::new(kind);
    let raw = db.raw().await;
    db.create_kamailio_table(&raw, false).await;
    for n in 0..237 {
        db.insert(&raw, COLUMNS, &row(&format!("u{n}"), "pw", "", 3600, 0))
            .await;
    }
    let store = RegistrationStore::open(&db.config(), "tenant-a")
        .await
        .expect("open");
    let (mut table, _) = store.load().await.expect("load");
    let state = |n: u64| LiveState {
        last_reason: format!("OK {n}"),
        ..online(n)
    };
    let ids: Vec<_> = table.iter().map(|(id, _, _)| id).collect();
    assert_eq!(ids.len(), 237);
    let expected: Vec<(String, LiveState)> = ids
        .iter()
        .enumerate()
        .map(|(n, &id)| {
            table.set_state(id, state(n as u64)).expect("set");
            let uuid = table.get(id).expect("row").0.l_uuid().to_owned();
            (uuid, state(n as u64))
        })
        .collect();
    store.save_states(&table, &ids).await.expect("save");
    store
        .save_states(&table, &ids[..5])
        .await
        .expect("save some again");
    store.close().await;

    let store = RegistrationStore::open(&db.config(), "tenant-a")
        .await
        .expect("reopen");
    let (table, _) = store.load().await.expect("load");
    for (uuid, state) in &expected {
        let id = table.find_uuid(uuid).expect("row");
        assert_eq!(table.get(id).expect("row").1, state, "{uuid}");
    }
    store.close().await;
    raw.close().await;
}

#[tokio::test]
async fn sqlite_many_states_are_saved_in_chunks() {
    many_states_are_saved_in_chunks(Kind::Sqlite).await;
}
#[tokio::test]
async fn postgres_many_states_are_saved_in_chunks() {
    many_states_are_saved_in_chunks(Kind::Postgres).await;
}
#[tokio::test]
async fn mariadb_many_states_are_saved_in_chunks() {
    many_states_are_saved_in_chunks(Kind::MySql).await;
}

#[tokio::test]
async fn sqlite_outcomes_since_the_last_write_survive_a_kill() {
    outcomes_since_the_last_write_survive_a_kill(Kind::Sqlite).await;
}
#[tokio::test]
async fn postgres_outcomes_since_the_last_write_survive_a_kill() {
    outcomes_since_the_last_write_survive_a_kill(Kind::Postgres).await;
}
#[tokio::test]
async fn mariadb_outcomes_since_the_last_write_survive_a_kill() {
    outcomes_since_the_last_write_survive_a_kill(Kind::MySql).await;
}
#[tokio::test]
async fn sqlite_live_state_survives_reopening() {
    live_state_survives_reopening(Kind::Sqlite).await;
}
#[tokio::test]
async fn sqlite_reload_keeps_unchanged_rows_state() {
    reload_keeps_unchanged_rows_state(Kind::Sqlite).await;
}
#[tokio::test]
async fn sqlite_rows_added_and_removed() {
    rows_added_and_removed(Kind::Sqlite).await;
}

#[tokio::test]
async fn postgres_reads_v5() {
    reads_a_kamailio_table_as_is(Kind::Postgres, false).await;
}
#[tokio::test]
async fn postgres_reads_v6_contact_user() {
    reads_a_kamailio_table_as_is(Kind::Postgres, true).await;
}
#[tokio::test]
async fn postgres_live_state_survives_reopening() {
    live_state_survives_reopening(Kind::Postgres).await;
}
#[tokio::test]
async fn postgres_reload_keeps_unchanged_rows_state() {
    reload_keeps_unchanged_rows_state(Kind::Postgres).await;
}
#[tokio::test]
async fn postgres_rows_added_and_removed() {
    rows_added_and_removed(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_reads_v5() {
    reads_a_kamailio_table_as_is(Kind::MySql, false).await;
}
#[tokio::test]
async fn mariadb_reads_v6_contact_user() {
    reads_a_kamailio_table_as_is(Kind::MySql, true).await;
}
#[tokio::test]
async fn mariadb_live_state_survives_reopening() {
    live_state_survives_reopening(Kind::MySql).await;
}
#[tokio::test]
async fn mariadb_reload_keeps_unchanged_rows_state() {
    reload_keeps_unchanged_rows_state(Kind::MySql).await;
}
#[tokio::test]
async fn mariadb_rows_added_and_removed() {
    rows_added_and_removed(Kind::MySql).await;
}

#[tokio::test]
async fn sqlite_unreadable_state_rows_are_dropped_not_fatal() {
    let db = TestDb::new(Kind::Sqlite);
    let raw = db.raw().await;
    db.create_kamailio_table(&raw, false).await;
    db.insert(&raw, COLUMNS, &row("a", "pw", "", 3600, 0)).await;
    let store = RegistrationStore::open(&db.config(), "default")
        .await
        .expect("open");
    let bad_state = format!(
        "INSERT INTO {} (tenant, l_uuid, row_hash, flags, expires, registered_until, call_id, \
         cseq, last_status, last_reason, failures, next_due_ms) \
         VALUES ('default', 'a', 0, 4, 3600, -1, '', -7, 200, 'OK', 0, 0)",
        store.state_table()
    );
    sqlx::query(&bad_state).execute(&raw).await.expect("insert");
    let (table, _) = store
        .load()
        .await
        .expect("a bad state row does not fail the load");
    let a = table.find_uuid("a").expect("a");
    assert_eq!(table.get(a).expect("a").1.flags, 0, "starts over");
    let count = format!("SELECT COUNT(*) AS n FROM {}", store.state_table());
    let left: i64 = sqlx::Row::get(
        &sqlx::query(&count).fetch_one(&raw).await.expect("count"),
        "n",
    );
    assert_eq!(left, 0, "the unreadable row was deleted");
    store.close().await;
    raw.close().await;
}
