//! The uacreg table siphost creates in its embedded SQLite default is one
//! Kamailio 5.6's uac module loads as it is: rows written by the store show up
//! in Kamailio's `uac.reg_dump`, the disabled flag included.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use siphost::registrations::{Record, RegistrationStore, RegistrationsConfig, Secret};

/// Kills the Kamailio it holds when the test ends, passed or not: its whole
/// process group, since Kamailio forks workers that outlive a killed main.
struct Kamailio(Child);

impl Drop for Kamailio {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.wait();
    }
}

fn account(uuid: &str, flags: u32) -> Record {
    Record {
        l_uuid: uuid.to_owned(),
        l_username: format!("local-{uuid}"),
        l_domain: "local.test".to_owned(),
        r_username: format!("remote-{uuid}"),
        r_domain: "127.0.0.1".to_owned(),
        auth_username: format!("auth-{uuid}"),
        auth_password: Secret::new("pw"),
        auth_proxy: "sip:127.0.0.1:5999".to_owned(),
        expires: 3600,
        flags,
        ..Record::default()
    }
}

fn kamailio_config(dir: &Path, db: &Path) -> String {
    format!(
        r#"#!KAMAILIO
listen=udp:127.0.0.1:25398
children=1
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "db_sqlite.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "kex.so"
loadmodule "ctl.so"
loadmodule "rr.so"
loadmodule "uac.so"
modparam("ctl", "binrpc", "unix:{dir}/kamailio_ctl")
modparam("uac", "reg_db_url", "sqlite:///{db}")
modparam("uac", "reg_contact_addr", "127.0.0.1:25398")
modparam("uac", "reg_active", 0)
request_route {{ drop; }}
"#,
        dir = dir.display(),
        db = db.display(),
    )
}

#[tokio::test]
async fn kamailio_loads_the_table_siphost_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("uac.db");
    let config = RegistrationsConfig {
        db_url: format!("sqlite://{}", db.display()),
        table: "uacreg".to_owned(),
        live_state_log: None,
    };
    let store = RegistrationStore::open(&config, "default")
        .await
        .expect("creates the database");
    store.insert_row(&account("acc1", 0)).await.expect("insert");
    store.insert_row(&account("acc2", 1)).await.expect("insert");
    store.close().await;

    let cfg = dir.path().join("kamailio.cfg");
    std::fs::write(&cfg, kamailio_config(dir.path(), &db)).expect("write cfg");
    let _kamailio = Kamailio(
        Command::new("kamailio")
            .args(["-f", &cfg.to_string_lossy(), "-DD", "-E", "-n", "1", "-Y"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("kamailio is installed (scripts/setup.sh)"),
    );
    let socket = format!("unix:{}/kamailio_ctl", dir.path().display());
    let deadline = Instant::now() + Duration::from_secs(20);
    let dump = loop {
        let output = Command::new("kamcmd")
            .args(["-s", &socket, "uac.reg_dump"])
            .output()
            .expect("kamcmd is installed");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && text.contains("l_uuid") {
            break text;
        }
        assert!(Instant::now() < deadline, "kamailio did not answer: {text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let records: Vec<&str> = dump.split('{').filter(|r| r.contains("l_uuid")).collect();
    assert_eq!(records.len(), 2, "{dump}");
    for (uuid, flags) in [("acc1", "flags: 0"), ("acc2", "flags: 1")] {
        let record = records
            .iter()
            .find(|r| r.contains(&format!("l_uuid: {uuid}\n")))
            .unwrap_or_else(|| panic!("{uuid} not loaded by Kamailio: {dump}"));
        assert!(record.contains(flags), "{uuid}: {record}");
        assert!(
            record.contains(&format!("r_username: remote-{uuid}")),
            "{record}"
        );
    }
}
