//! libFuzzer target for the SIP codec: parse, read every accessor, edit, serialize and
//! re-parse (the checks live in host/sip/tests/common/exercise.rs, shared with `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../../host/sip/tests/common/exercise.rs");

fuzz_target!(|data: &[u8]| exercise(data));
