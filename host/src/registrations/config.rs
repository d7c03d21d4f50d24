//! `[tenant.registrations]`: which database holds a tenant's `uacreg` accounts.
//! The operator chooses it; a filter never opens a database itself.

use serde::Deserialize;

use super::store::DbUrl;

/// `[tenant.registrations]` of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrationsConfig {
    /// `sqlite:///abs/path` (Kamailio's `sqlite:////abs/path` too),
    /// `postgres://…` or `mysql://user:pw@host/db`.
    pub db_url: String,
    /// Kamailio's uacreg table, read as it is.
    #[serde(default = "default_table")]
    pub table: String,
    /// File each live-state change is appended to until the database holds it, so a
    /// killed process loses none (default: beside an SQLite database; none for a
    /// server database unless set).
    #[serde(default)]
    pub live_state_log: Option<String>,
}

fn default_table() -> String {
    "uacreg".to_owned()
}

/// Longest accepted table name: the live-state table is named
/// `<table>_siphost_state` and must stay within MySQL's 64 and PostgreSQL's 63
/// characters.
pub const MAX_TABLE_NAME: usize = 48;

impl RegistrationsConfig {
    /// Checks the section; the error names the key (relative to
    /// `[tenant.registrations]`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        DbUrl::parse(&self.db_url).map_err(|e| ("db_url", e.to_string()))?;
        if self
            .live_state_log
            .as_ref()
            .is_some_and(|path| path.trim().is_empty())
        {
            return Err(("live_state_log", "must be a file path, got \"\"".to_owned()));
        }
        validate_table_name(&self.table).map_err(|e| ("table", e))
    }
}

/// Table names are spliced into SQL, so only plain identifiers are accepted.
pub fn validate_table_name(table: &str) -> Result<(), String> {
    let mut chars = table.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "{table:?} is not a plain SQL identifier (letters, digits, '_', not starting with a digit)"
        ));
    }
    if table.len() > MAX_TABLE_NAME {
        return Err(format!(
            "{table:?} is longer than {MAX_TABLE_NAME} characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RegistrationsConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn table_defaults_to_uacreg() {
        let config = parse("db_url = \"sqlite:///var/lib/siphost/uac.db\"").expect("valid");
        assert_eq!(config.table, "uacreg");
        config.validate().expect("valid");
    }

    #[test]
    fn bad_values_name_the_key() {
        let config = parse("db_url = \"redis://x\"").expect("parses");
        assert_eq!(config.validate().expect_err("bad scheme").0, "db_url");
        let config =
            parse("db_url = \"sqlite:///x.db\"\ntable = \"uacreg; DROP\"").expect("parses");
        assert_eq!(config.validate().expect_err("bad table").0, "table");
        let config = parse("db_url = \"sqlite:///x.db\"\nlive_state_log = \"\"").expect("parses");
        assert_eq!(
            config.validate().expect_err("empty path"),
            ("live_state_log", "must be a file path, got \"\"".to_owned())
        );
        assert!(parse("db_url = \"sqlite:///x.db\"\ncolour = 1").is_err());
        assert!(parse("table = \"uacreg\"").is_err(), "db_url is required");
    }
}
