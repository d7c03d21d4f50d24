//! Generated bindings, one module per compatible line of the WIT contract.
//! A breaking WIT change adds a new module beside `v0_1` instead of editing it.

/// `siphost:filter@0.1.x`. Bound to the widest world, `filter-with-registrations`:
/// the linker offers every import, and each export interface is looked up on
/// its own, so a component of the plain `filter` world (no
/// `registration-handler`) links as before.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "siphost:filter/filter-with-registrations@0.1.0",
        imports: { default: trappable },
        with: {
            "siphost:filter/types.message": super::MessageRef,
        },
    });
}

/// Host-side representation of a `message` handle: the rep indexes the
/// per-call message slots of the store (see `CallState`).
pub struct MessageRef;
