//! Test filter version "a" for the hot-swap tests: marks every message with
//! `X-Filter-Version: a`.

const MARK: &str = "a";

include!("../../mark.rs");
