//! The fuzz target's checks (common/exercise.rs) over a deterministic set of mangled
//! parameters: every recorded vsf/vst value truncated, bit-flipped and re-padded.

include!("common/exercise.rs");

#[test]
fn mangled_parameters_are_refused_cleanly() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("vectors/kamailio-uac-replace.json")).unwrap();
    let mut params = Vec::new();
    for v in vectors["vectors"].as_array().unwrap() {
        let rr = v["record_route"].as_str().unwrap();
        for p in rr.trim_end_matches('>').split(';') {
            if let Some(value) = p.strip_prefix("vsf=").or_else(|| p.strip_prefix("vst=")) {
                params.push(value.to_owned());
            }
        }
    }
    let mut runs = 0;
    for p in &params {
        for cut in 0..p.len() {
            for uri in ["sip:anonymous@anonymous.invalid", "sip:a@b", ""] {
                exercise(format!("{}\n{uri}\nmy_secret_passwd", &p[..cut]).as_bytes());
                runs += 1;
            }
        }
        let bytes = p.as_bytes();
        for i in 0..bytes.len() {
            for flip in [1u8, 0x20, 0x80] {
                let mut m = bytes.to_vec();
                m[i] ^= flip;
                let mut input = m;
                input.extend_from_slice(b"\nsip:anonymous@anonymous.invalid\n");
                exercise(&input);
                runs += 1;
            }
        }
    }
    assert!(runs > 1000, "{runs} inputs exercised");
}
