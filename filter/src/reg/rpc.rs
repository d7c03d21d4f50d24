//! The uac_reg_* rule functions and the uac.reg_* RPC methods over the store.
