//! Cheap, deterministic robustness run for `cargo test` (CI without nightly): random bytes
//! and mutated torture/sample messages through every codec entry point; nothing may panic
//! and the invariants in `common/exercise.rs` must hold.

include!("common/exercise.rs");

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torture");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.push(include_bytes!("data/invite.sip").to_vec());
    seeds.sort();
    seeds
}

/// Bytes that steer a SIP parser into its edge cases.
const INTERESTING: &[u8] = b"\r\n \t:;,<>\"\\@?=%[]/0123456789\x00\xff\xc3";

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(6) {
            0 if !input.is_empty() => {
                let at = at.min(input.len() - 1);
                input[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            1 => input.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 if at < input.len() => {
                let end = (at + rng.below(16) + 1).min(input.len());
                input.drain(at..end);
            }
            3 => input.truncate(at),
            4 if !input.is_empty() => {
                let from = rng.below(input.len());
                let end = (from + rng.below(32) + 1).min(input.len());
                let chunk = input[from..end].to_vec();
                let at = at.min(input.len());
                input.splice(at..at, chunk);
            }
            _ => {
                let at = at.min(input.len());
                input.splice(at..at, b"\r\n ".iter().copied());
            }
        }
    }
}

/// Iterations scale with `SIPHOST_NO_PANIC_SCALE` (default 1) for longer local runs.
fn scaled(n: usize) -> usize {
    n * std::env::var("SIPHOST_NO_PANIC_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

#[test]
fn seeds_pass_the_exercise() {
    for seed in seeds() {
        exercise(&seed);
    }
}

#[test]
fn mutated_messages_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d
        ^ std::env::var("SIPHOST_NO_PANIC_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0));
    for _ in 0..scaled(20_000) {
        let mut input = seeds[rng.below(seeds.len())].clone();
        mutate(&mut rng, &mut input);
        exercise(&input);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..scaled(5_000) {
        let len = rng.below(300);
        let mut input: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if rng.below(2) == 0 {
            input.splice(0..0, b"INVITE sip:a@b SIP/2.0\r\n".iter().copied());
        }
        exercise(&input);
    }
}
