//! What the registration room feeds the admin side: a read-only view of the remote
//! registrations (counts by state, a searchable list without secrets) for RPC, metrics and the page.

use serde::Serialize;

/// Where a remote registration stands, from Kamailio's uac flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationState {
    /// Registered and not expired (`ONLINE`).
    Online,
    /// A REGISTER is in flight (`ONGOING`).
    Ongoing,
    /// Neither: waiting for the next attempt, or failed.
    Offline,
    /// Disabled by the operator or the table (`DISABLED`).
    Disabled,
}

impl RegistrationState {
    pub const ALL: [RegistrationState; 4] = [
        RegistrationState::Online,
        RegistrationState::Ongoing,
        RegistrationState::Offline,
        RegistrationState::Disabled,
    ];

    /// Kamailio's uac flag bits: DISABLED=1, ONGOING=2, ONLINE=4.
    pub fn from_kamailio_flags(flags: u32) -> Self {
        if flags & 1 != 0 {
            Self::Disabled
        } else if flags & 4 != 0 {
            Self::Online
        } else if flags & 2 != 0 {
            Self::Ongoing
        } else {
            Self::Offline
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Ongoing => "ongoing",
            Self::Offline => "offline",
            Self::Disabled => "disabled",
        }
    }
}

/// How many registrations one tenant has in one state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateCount {
    pub tenant: String,
    pub state: RegistrationState,
    pub count: u64,
}

/// One registration as an operator may see it. There is deliberately no
/// field for the password or HA1: this view cannot leak them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistrationSummary {
    pub tenant: String,
    pub l_uuid: String,
    /// `r_username@r_domain`, the address of record registered remotely.
    pub aor: String,
    pub state: RegistrationState,
    /// Status code of the last final reply, if any.
    pub last_status: Option<u16>,
    /// Seconds until the binding expires (negative: expired).
    pub expires_in_s: Option<i64>,
}

/// Implemented by the registration store; the host hands it to
/// [`super::metrics::HostMetrics::set_registration_source`]. Both calls are
/// made from admin threads (scrapes, RPC), never from the SIP path, and must
/// not block on I/O: answer from the in-memory live state.
pub trait RegistrationSource: Send + Sync {
    /// Counts by tenant and state (states with no registration may be left out).
    fn counts(&self) -> Vec<StateCount>;
    /// Registrations whose l_uuid, AOR or tenant contains `query`
    /// (case-insensitive; empty matches all), at most `limit`, in a stable order.
    fn search(&self, query: &str, limit: usize) -> Vec<RegistrationSummary>;
}

/// Kamailio's `uac:regtotal`, `uac:regactive`, `uac:regdisabled` from the counts.
pub fn kamailio_totals(counts: &[StateCount]) -> [(&'static str, u64); 3] {
    let sum = |pick: &dyn Fn(RegistrationState) -> bool| {
        counts
            .iter()
            .filter(|c| pick(c.state))
            .map(|c| c.count)
            .sum::<u64>()
    };
    [
        ("regtotal", sum(&|_| true)),
        ("regactive", sum(&|s| s == RegistrationState::Online)),
        ("regdisabled", sum(&|s| s == RegistrationState::Disabled)),
    ]
}

/// The tenants' live registrations as the admin side sees them.
pub struct RuntimeRegistrations(pub std::sync::Arc<crate::runtime::Runtime>);

impl RegistrationSource for RuntimeRegistrations {
    fn counts(&self) -> Vec<StateCount> {
        self.0
            .tenants()
            .iter()
            .filter_map(|t| t.shared.registrations.get())
            .flat_map(|r| {
                RegistrationState::ALL
                    .iter()
                    .zip(r.state_counts())
                    .map(|(&state, count)| StateCount {
                        tenant: r.tenant().to_owned(),
                        state,
                        count,
                    })
            })
            .collect()
    }

    fn search(&self, query: &str, limit: usize) -> Vec<RegistrationSummary> {
        let now = crate::registrations::service::now_ms() / 1000;
        let mut found = Vec::new();
        for r in self
            .0
            .tenants()
            .iter()
            .filter_map(|t| t.shared.registrations.get())
        {
            let tenant_matches = r.tenant().to_lowercase().contains(&query.to_lowercase());
            let query = if tenant_matches { "" } else { query };
            let Some(records) = r.search(query, limit.saturating_sub(found.len())) else {
                continue;
            };
            found.extend(records.into_iter().map(|(a, s)| RegistrationSummary {
                tenant: r.tenant().to_owned(),
                l_uuid: a.l_uuid().to_owned(),
                aor: format!("{}@{}", a.r_username(), a.r_domain()),
                state: RegistrationState::from_kamailio_flags(s.flags),
                last_status: (s.last_status != 0).then_some(s.last_status),
                expires_in_s:
                    (s.registered_until != 0).then(|| s.registered_until as i64 - now as i64),
            }));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_map_like_kamailio() {
        assert_eq!(
            RegistrationState::from_kamailio_flags(1 | 4),
            RegistrationState::Disabled
        );
        assert_eq!(
            RegistrationState::from_kamailio_flags(4 | 8 | 16),
            RegistrationState::Online
        );
        assert_eq!(
            RegistrationState::from_kamailio_flags(2 | 16),
            RegistrationState::Ongoing
        );
        assert_eq!(
            RegistrationState::from_kamailio_flags(16),
            RegistrationState::Offline
        );
    }

    #[test]
    fn totals_add_up_across_tenants() {
        let count = |tenant: &str, state, count| StateCount {
            tenant: tenant.into(),
            state,
            count,
        };
        let counts = [
            count("a", RegistrationState::Online, 3),
            count("b", RegistrationState::Online, 2),
            count("a", RegistrationState::Disabled, 1),
            count("b", RegistrationState::Offline, 4),
        ];
        assert_eq!(
            kamailio_totals(&counts),
            [("regtotal", 10), ("regactive", 5), ("regdisabled", 1)]
        );
    }
}
