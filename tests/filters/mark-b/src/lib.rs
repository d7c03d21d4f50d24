//! Test filter version "b" for the hot-swap tests: marks every message with
//! `X-Filter-Version: b`.

const MARK: &str = "b";

include!("../../mark.rs");
