//! Kamailio's uac_reg_* script functions over the store: lookup, status, request_to,
//! enable/disable and refresh, with Kamailio's return values.

use super::flags;
use super::store::{Credentials, LookupKey, RegistrationStore, StoreError};

/// `uac_reg_lookup(uuid, dst)`: the local AoR `sip:l_username@l_domain` of `l_uuid`.
pub fn lookup(store: &dyn RegistrationStore, l_uuid: &str) -> Option<String> {
    let (a, _) = store.get(l_uuid)?;
    Some(format!("sip:{}@{}", a.l_username, a.l_domain))
}

/// `uac_reg_lookup_uri(uri, dst)`: the l_uuid of the record whose l_username is the URI's
/// user (reg_use_domain unset: the domain is not compared, as Kamailio's default).
pub fn lookup_uri(store: &dyn RegistrationStore, uri: &str) -> Option<String> {
    let rest = uri
        .trim()
        .trim_start_matches('<')
        .strip_prefix("sip:")
        .or_else(|| uri.trim().strip_prefix("sips:"))?;
    let user = rest.split_once('@')?.0;
    let id = *store.find(LookupKey::LUsername, user).first()?;
    store.get_by_id(id).map(|(a, _)| a.l_uuid)
}

/// `uac_reg_status(uuid)`: 1 registered (the old binding counts while a refresh is under
/// way), −1 not found, −2 in progress, −3 disabled, −99 waiting for a new attempt.
pub fn status(store: &dyn RegistrationStore, l_uuid: &str, now: u64) -> i32 {
    let Some((_, state)) = store.get(l_uuid) else {
        return -1;
    };
    if state.flags & flags::DISABLED != 0 {
        -3
    } else if state.is_registered(now) {
        1
    } else if state.flags & flags::ONGOING != 0 {
        -2
    } else {
        -99
    }
}

/// What `uac_reg_request_to` sets: R-URI, destination and the credentials for uac_auth().
#[derive(Clone, PartialEq, Eq)]
pub struct RequestTo {
    pub request_uri: String,
    /// auth_proxy (empty: none).
    pub dst: String,
    pub auth_username: String,
    pub realm: String,
    pub credentials: Credentials,
}

impl std::fmt::Debug for RequestTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestTo")
            .field("request_uri", &self.request_uri)
            .field("dst", &self.dst)
            .field("auth_username", &self.auth_username)
            .field("credentials", &self.credentials)
            .finish()
    }
}

/// `uac_reg_request_to(user, mode)` mode bits.
pub const MATCH_L_USERNAME: u32 = 1;
pub const USE_HA1: u32 = 2;

/// `uac_reg_request_to(user, mode)`: bit 1 matches l_username instead of l_uuid; bit 2
/// hands the HA1 instead of the password. `None` when no record (or no such secret).
pub fn request_to(store: &dyn RegistrationStore, user: &str, mode: u32) -> Option<RequestTo> {
    let id = if mode & MATCH_L_USERNAME != 0 {
        *store.find(LookupKey::LUsername, user).first()?
    } else {
        *store.find(LookupKey::LUuid, user).first()?
    };
    let (a, _) = store.get_by_id(id)?;
    let credentials = store.credentials(id)?;
    let wanted_ha1 = mode & USE_HA1 != 0;
    if wanted_ha1 != matches!(credentials, Credentials::Ha1(_)) {
        return None;
    }
    Some(RequestTo {
        request_uri: format!("sip:{}@{}", a.r_username, a.r_domain),
        dst: a.auth_proxy,
        auth_username: a.auth_username,
        realm: a.realm,
        credentials,
    })
}

/// `uac_reg_enable(attr, val)` / `uac_reg_disable`: toggles DISABLED on every matching
/// record; an enabled record is due a second later (Kamailio: timer_expires = now + 1).
/// Returns how many records matched.
pub fn set_enabled(
    store: &mut dyn RegistrationStore,
    key: LookupKey,
    value: &str,
    enabled: bool,
    now_ms: u64,
) -> Result<usize, StoreError> {
    let ids = store.find(key, value);
    for &id in &ids {
        let Some(mut state) = store.state(id) else {
            continue;
        };
        if enabled {
            state.flags &= !flags::DISABLED;
            state.failures = 0;
            store.update_state(id, &state)?;
            store.schedule(id, Some(now_ms + 1000))?;
        } else {
            state.flags |= flags::DISABLED;
            store.update_state(id, &state)?;
            store.schedule(id, None)?;
        }
    }
    Ok(ids.len())
}

/// `uac_reg_refresh(l_uuid)`: re-reads the table (unchanged rows keep their state, an edited
/// row starts over); true when the record exists afterwards.
pub fn refresh(store: &mut dyn RegistrationStore, l_uuid: &str) -> Result<bool, StoreError> {
    store.reload()?;
    Ok(store.get(l_uuid).is_some())
}
