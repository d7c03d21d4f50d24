//! `[[tenant]]` sections of the host configuration.

use serde::Deserialize;

/// One tenant: which traffic is theirs and which filters it passes through.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
}
