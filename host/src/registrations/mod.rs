//! Remote registrations (Kamailio uac's `uacreg`): the tenant's account store and
//! the due-time scheduler the uac filter's registration state machine runs on.
//!
//! The store ([`store`]) reads Kamailio's table as it is and persists live state
//! beside it; the table ([`table`]) indexes the accounts in memory; the scheduler
//! ([`scheduler`]) decides, without I/O, when each account is due.

pub mod config;
pub mod record;
pub mod scheduler;
pub mod service;
pub mod state_log;
pub mod store;
pub mod table;

pub use config::RegistrationsConfig;
pub use record::{Account, LiveState, Record, RowError, Secret, flags};
pub use scheduler::{Scheduler, SchedulerConfig};
pub use service::Registrations;
pub use store::{DbUrl, LoadedRows, RegistrationStore, SkippedRow, StoreError};
pub use table::{Counters, LookupKey, RecordId, RegistrationTable, ReloadDiff, TableError};

/// A valid record for tests, every column derived from `uuid`.
#[cfg(test)]
pub(crate) fn test_record(uuid: &str) -> Record {
    Record {
        l_uuid: uuid.to_owned(),
        l_username: format!("local-{uuid}"),
        l_domain: "local.test".to_owned(),
        r_username: format!("remote-{uuid}"),
        r_domain: "provider.test".to_owned(),
        auth_username: format!("auth-{uuid}"),
        auth_password: Secret::new("s3cret-pw"),
        auth_proxy: "sip:127.0.0.1:5080".to_owned(),
        expires: 3600,
        ..Record::default()
    }
}
