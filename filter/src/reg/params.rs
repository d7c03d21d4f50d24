//! The registration modparams, Kamailio's names, read from the filter config; the host reads
//! the scheduler's ones (reg_timer_interval, reg_random_delay, ...) from the same table.

use serde::Deserialize;

/// The `reg_*` keys as written in `[tenant.filter.config]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegParams {
    pub reg_contact_addr: Option<String>,
    pub reg_retry_interval: Option<i64>,
    pub reg_keep_callid: Option<i64>,
    pub reg_timer_interval: Option<i64>,
    pub reg_random_delay: Option<i64>,
    pub reg_active: Option<i64>,
    pub reg_gc_interval: Option<i64>,
    pub default_socket: Option<String>,
    /// Read by the host scheduler (pacing of first registrations); checked here.
    pub reg_max_per_second: Option<i64>,
    /// Read by the host scheduler (the retry backoff's cap); checked here.
    pub reg_retry_max_interval: Option<i64>,
    /// Read by the host scheduler (the refresh window); checked here.
    pub reg_refresh_min_percent: Option<i64>,
    pub reg_refresh_max_percent: Option<i64>,
    /// siphost's own: answer the registrar's last challenge again on the next REGISTER.
    pub reg_reuse_nonce: Option<i64>,
    /// siphost's own: how many records' challenges are kept for that at most.
    pub reg_reuse_nonce_max: Option<i64>,
}

/// The checked registration options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegParams {
    /// host[:port][;params], no `sip:`; the row's contact_addr wins.
    pub contact_addr: String,
    /// Seconds; 0 disables a record after a failure (Kamailio).
    pub retry_interval: u32,
    pub keep_callid: bool,
    pub timer_interval: u32,
    pub random_delay: u32,
    pub active: bool,
    pub gc_interval: u32,
    /// `proto:host:port`; the row's socket wins.
    pub default_socket: String,
    /// `reg_reuse_nonce` (siphost's own; seconds, default 300, 0 never): while the
    /// registrar's last challenge is younger than this, a refresh carries the answer to it
    /// (same nonce, nc + 1), so it is one transaction instead of two; a refused or stale
    /// one is answered as usual. 300 s is Kamailio's `nonce_expire` default.
    pub reuse_nonce_secs: u32,
    /// `reg_reuse_nonce_max` (siphost's own; default [`DEFAULT_REUSE_NONCE_MAX`]): the
    /// records whose last challenge is kept at most, about 150 bytes each of the
    /// filter's memory (`memory_limit_mib`); a record beyond it is challenged on each
    /// refresh, as with `reg_reuse_nonce = 0`. Without a bound, a million records' kept
    /// challenges outgrew the default 16 MiB and the filter trapped on every ~100,000th.
    pub reuse_nonce_max: u32,
}

/// Kept challenges at most by default: about 7.5 MB, half the default `memory_limit_mib`.
pub const DEFAULT_REUSE_NONCE_MAX: u32 = 50_000;

impl Default for RegParams {
    fn default() -> Self {
        RegParams {
            contact_addr: String::new(),
            retry_interval: 0,
            keep_callid: false,
            timer_interval: 90,
            random_delay: 0,
            active: true,
            gc_interval: 150,
            default_socket: String::new(),
            reuse_nonce_secs: 300,
            reuse_nonce_max: DEFAULT_REUSE_NONCE_MAX,
        }
    }
}

/// A bad `reg_*` value: the key and why (wrapped into `ConfigError::Invalid`).
pub type ParamError = (&'static str, String);

fn seconds(key: &'static str, v: Option<i64>, default: u32, min: u32) -> Result<u32, ParamError> {
    number(key, v, default, min, "a number of seconds")
}

fn count(key: &'static str, v: Option<i64>, default: u32) -> Result<u32, ParamError> {
    number(key, v, default, 0, "a count")
}

/// `v` (`default` when unset) as a u32 from `min`; `what` names it in the error.
fn number(
    key: &'static str,
    v: Option<i64>,
    default: u32,
    min: u32,
    what: &str,
) -> Result<u32, ParamError> {
    match v {
        None => Ok(default),
        Some(n) if n < i64::from(min) || n > i64::from(u32::MAX) => {
            Err((key, format!("must be {what} from {min}, got {n}")))
        }
        Some(n) => Ok(n as u32),
    }
}

fn flag(key: &'static str, v: Option<i64>, default: bool) -> Result<bool, ParamError> {
    match v {
        None => Ok(default),
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        Some(n) => Err((key, format!("must be 0 or 1, got {n}"))),
    }
}

fn has_sip_scheme(addr: &str) -> bool {
    let lower = addr.trim().to_ascii_lowercase();
    lower.starts_with("sip:") || lower.starts_with("sips:")
}

impl RegParams {
    pub fn from_raw(raw: &RawRegParams) -> Result<RegParams, ParamError> {
        let d = RegParams::default();
        let contact_addr = match &raw.reg_contact_addr {
            None => d.contact_addr,
            Some(a) if a.trim().is_empty() => {
                return Err(("reg_contact_addr", "must not be empty".into()));
            }
            Some(a) if has_sip_scheme(a) => {
                return Err((
                    "reg_contact_addr",
                    "is host[:port][;params], without sip:".into(),
                ));
            }
            Some(a) if a.contains(['<', '>', ' ', '@']) => {
                return Err((
                    "reg_contact_addr",
                    "is host[:port][;params] (no user, brackets or spaces)".into(),
                ));
            }
            Some(a) => a.trim().to_owned(),
        };
        if let Some(n) = raw.reg_max_per_second
            && n < 1
        {
            return Err(("reg_max_per_second", format!("must be at least 1, got {n}")));
        }
        // The host's scheduler reads these from the same table and checks how they relate;
        // here only their range, so a typo fails the filter's configure too.
        seconds("reg_retry_max_interval", raw.reg_retry_max_interval, 0, 0)?;
        for (key, value) in [
            ("reg_refresh_min_percent", raw.reg_refresh_min_percent),
            ("reg_refresh_max_percent", raw.reg_refresh_max_percent),
        ] {
            if let Some(n) = value
                && !(1..=95).contains(&n)
            {
                return Err((key, format!("must be within 1..=95, got {n}")));
            }
        }
        let default_socket = match &raw.default_socket {
            Some(s) if s.contains(' ') || s.is_empty() => {
                return Err(("default_socket", "must be proto:host:port".into()));
            }
            Some(s) => s.clone(),
            None => d.default_socket,
        };
        Ok(RegParams {
            contact_addr,
            retry_interval: seconds("reg_retry_interval", raw.reg_retry_interval, 0, 0)?,
            keep_callid: flag("reg_keep_callid", raw.reg_keep_callid, false)?,
            timer_interval: seconds("reg_timer_interval", raw.reg_timer_interval, 90, 1)?,
            random_delay: seconds("reg_random_delay", raw.reg_random_delay, 0, 0)?,
            active: flag("reg_active", raw.reg_active, true)?,
            gc_interval: seconds("reg_gc_interval", raw.reg_gc_interval, 150, 1)?,
            reuse_nonce_secs: seconds("reg_reuse_nonce", raw.reg_reuse_nonce, 300, 0)?,
            reuse_nonce_max: count(
                "reg_reuse_nonce_max",
                raw.reg_reuse_nonce_max,
                DEFAULT_REUSE_NONCE_MAX,
            )?,
            default_socket,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<RegParams, ParamError> {
        RegParams::from_raw(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn the_host_schedulers_keys_are_accepted_and_range_checked() {
        parse(r#"{"reg_retry_max_interval": 600, "reg_refresh_min_percent": 40, "reg_refresh_max_percent": 70}"#)
            .unwrap();
        assert_eq!(
            parse(r#"{"reg_refresh_max_percent": 99}"#).unwrap_err().0,
            "reg_refresh_max_percent"
        );
        assert_eq!(
            parse(r#"{"reg_retry_max_interval": -1}"#).unwrap_err().0,
            "reg_retry_max_interval"
        );
    }

    #[test]
    fn defaults_are_kamailios() {
        let p = parse("{}").unwrap();
        assert_eq!(p.timer_interval, 90);
        assert_eq!(p.gc_interval, 150);
        assert_eq!(p.retry_interval, 0);
        assert!(p.active && !p.keep_callid);
    }

    #[test]
    fn reads_the_issue_example() {
        let p = parse(
            r#"{"reg_contact_addr":"127.0.0.1:5060","reg_retry_interval":30,"reg_keep_callid":1}"#,
        )
        .unwrap();
        assert_eq!(p.contact_addr, "127.0.0.1:5060");
        assert_eq!(p.retry_interval, 30);
        assert!(p.keep_callid);
    }

    #[test]
    fn errors_name_the_key() {
        assert_eq!(
            parse(r#"{"reg_keep_callid":2}"#).unwrap_err().0,
            "reg_keep_callid"
        );
        assert_eq!(
            parse(r#"{"reg_retry_interval":-1}"#).unwrap_err().0,
            "reg_retry_interval"
        );
        assert_eq!(
            parse(r#"{"reg_timer_interval":0}"#).unwrap_err().0,
            "reg_timer_interval"
        );
        assert_eq!(
            parse(r#"{"reg_contact_addr":"sip:a.test"}"#).unwrap_err().0,
            "reg_contact_addr"
        );
        assert_eq!(parse(r#"{"reg_active":5}"#).unwrap_err().0, "reg_active");
        assert_eq!(
            parse(r#"{"reg_reuse_nonce_max":-1}"#).unwrap_err(),
            (
                "reg_reuse_nonce_max",
                "must be a count from 0, got -1".to_string()
            )
        );
        assert_eq!(
            parse(r#"{"reg_max_per_second":0}"#).unwrap_err().0,
            "reg_max_per_second"
        );
        assert_eq!(
            parse(r#"{"default_socket":""}"#).unwrap_err().0,
            "default_socket"
        );
    }

    #[test]
    fn the_filter_config_reads_them_and_names_the_key() {
        let options = crate::config::Options::from_json(
            r#"{"reg_contact_addr":"127.0.0.1:5060","reg_retry_interval":30,"reg_keep_callid":1}"#,
        )
        .unwrap();
        assert!(options.registration.keep_callid);
        let err = crate::config::Options::from_json(r#"{"reg_keep_callid":7}"#).unwrap_err();
        assert!(err.to_string().contains("reg_keep_callid"), "{err}");
    }
}
