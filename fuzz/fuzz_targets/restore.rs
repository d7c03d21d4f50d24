//! libFuzzer target for the vsf/vst decoders and the uac filter's in-dialog restore path
//! (the checks live in filter/tests/common/exercise.rs, shared with `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

include!("../../filter/tests/common/exercise.rs");

fuzz_target!(|data: &[u8]| exercise(data));
