//! The host configuration (TOML): listeners, timers, routing, tenants.
