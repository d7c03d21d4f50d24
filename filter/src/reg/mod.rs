//! Remote registrations (Kamailio uac's uacreg): the REGISTER state machine, its modparams,
//! and the uac_reg_* functions and uac.reg_* RPC, over a [`store::RegistrationStore`].
//! The host owns the store, the clock and the schedule; this module owns the protocol.

pub mod functions;
pub mod machine;
pub mod params;
pub mod rpc;
pub mod store;

/// Kamailio's record flags (`uac.reg_info` shows them as a number).
pub mod flags {
    pub const DISABLED: u32 = 1;
    pub const ONGOING: u32 = 2;
    pub const ONLINE: u32 = 4;
    pub const AUTHSENT: u32 = 8;
    pub const INIT: u32 = 16;
}
