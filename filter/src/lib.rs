//! The `uac` filter (Kamailio's uac module) for siphost, as plain Rust: rules, From/To
//! replacement and restore over two small traits; the wasm component glue is `guest`.
//!
//! - [`rules`]: the rule engine (`on`, `when`, `do`), checked once at configure.
//! - [`replace`], [`restore`]: the uac functions and the vsf/vst encodings.
//! - [`uac::Uac`]: the configured filter, hook by hook, over [`host::SipMessage`] and
//!   [`host::HostState`]; [`memory`] implements those traits in memory.

pub mod auth;
pub mod cached;
pub mod config;
pub mod digest;
pub mod host;
pub mod memory;
pub mod nameaddr;
pub mod reg;
pub mod replace;
pub mod req_send;
pub mod restore;
pub mod rules;
pub mod uac;

#[cfg(target_arch = "wasm32")]
mod guest;
