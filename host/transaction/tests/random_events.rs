//! Property test with a deterministic pseudo-random event generator: random event sequences never
//! panic, keep the action invariants, and terminate within 64·T1 + max(D, K, I, J) of the last event.

use std::time::{Duration, Instant};

use siphost_transaction::{
    ClientAction, ClientState, ClientTransaction, Kind, ServerAction, ServerState,
    ServerTransaction, TimerConfig, TransactionError,
};

/// xorshift64*: reproducible, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

const STATUSES: [u16; 14] = [
    0, 99, 100, 180, 183, 200, 202, 299, 302, 404, 486, 503, 699, 700,
];
const SEEDS: u64 = 1_500;

fn random_config(rng: &mut Rng) -> TimerConfig {
    let t1 = Duration::from_millis(rng.pick(&[50, 500, 1_000]));
    let t2 = t1.max(Duration::from_millis(rng.pick(&[500, 4_000])));
    let t4 = Duration::from_millis(rng.pick(&[1_000, 5_000]));
    TimerConfig::new(t1, t2, t4).expect("valid by construction")
}

/// 64·T1 + max(D, K, I, J): the longest a machine may live after its last input.
fn termination_bound(config: &TimerConfig, reliable: bool) -> Duration {
    let linger = [
        config.timer_d(reliable),
        config.timer_k(reliable),
        config.timer_i(reliable),
        config.timer_j(reliable),
    ]
    .into_iter()
    .max()
    .unwrap_or_default();
    config.sixty_four_t1() + linger
}

fn advance(rng: &mut Rng, now: Instant) -> Instant {
    let step = if rng.below(4) == 0 {
        rng.below(40_000)
    } else {
        rng.below(2_000)
    };
    now + Duration::from_millis(step)
}

/// Observes a client's actions and checks invariants that hold after every input.
#[derive(Default)]
struct ClientWatch {
    terminated: bool,
    transmits: usize,
}

impl ClientWatch {
    fn drain(&mut self, tx: &mut ClientTransaction) -> Vec<ClientAction> {
        let actions: Vec<_> = std::iter::from_fn(|| tx.poll_action()).collect();
        for action in &actions {
            assert!(!self.terminated, "action {action:?} after Terminated");
            match action {
                ClientAction::Terminated => self.terminated = true,
                ClientAction::Transmit => self.transmits += 1,
                _ => {}
            }
        }
        assert_eq!(tx.is_terminated(), self.terminated);
        if self.terminated {
            assert_eq!(tx.poll_timeout(), None);
        }
        if tx.is_reliable() {
            assert!(self.transmits <= 1, "reliable client retransmitted");
        }
        actions
    }

    /// Drives every deadline up to `limit`, asserting none lies beyond it.
    fn run_timers(&mut self, tx: &mut ClientTransaction, limit: Instant) {
        while let Some(at) = tx.poll_timeout() {
            assert!(at <= limit, "client deadline beyond the termination bound");
            tx.handle_timeout(at);
            self.drain(tx);
        }
    }
}

#[derive(Default)]
struct ServerWatch {
    terminated: bool,
}

impl ServerWatch {
    fn drain(&mut self, tx: &mut ServerTransaction) -> Vec<ServerAction> {
        let actions: Vec<_> = std::iter::from_fn(|| tx.poll_action()).collect();
        for action in &actions {
            assert!(!self.terminated, "action {action:?} after Terminated");
            if *action == ServerAction::Terminated {
                self.terminated = true;
            }
        }
        assert_eq!(tx.is_terminated(), self.terminated);
        if self.terminated {
            assert_eq!(tx.poll_timeout(), None);
        }
        actions
    }

    fn run_timers(&mut self, tx: &mut ServerTransaction, limit: Instant) {
        while let Some(at) = tx.poll_timeout() {
            assert!(at <= limit, "server deadline beyond the termination bound");
            tx.handle_timeout(at);
            let actions = self.drain(tx);
            if tx.is_reliable() {
                assert!(
                    !actions.contains(&ServerAction::Transmit),
                    "reliable Timer G"
                );
            }
        }
    }
}

/// Either the exact driver (every deadline in order) or a late one (a single call at `now`).
fn catch_up_client(
    rng: &mut Rng,
    watch: &mut ClientWatch,
    tx: &mut ClientTransaction,
    now: Instant,
) {
    if rng.below(2) == 0 {
        while let Some(at) = tx.poll_timeout().filter(|at| *at <= now) {
            tx.handle_timeout(at);
            watch.drain(tx);
        }
    } else {
        tx.handle_timeout(now);
        watch.drain(tx);
    }
}

fn catch_up_server(
    rng: &mut Rng,
    watch: &mut ServerWatch,
    tx: &mut ServerTransaction,
    now: Instant,
) {
    if rng.below(2) == 0 {
        while let Some(at) = tx.poll_timeout().filter(|at| *at <= now) {
            tx.handle_timeout(at);
            watch.drain(tx);
        }
    } else {
        tx.handle_timeout(now);
        watch.drain(tx);
    }
}

fn check_error(result: Result<(), TransactionError>, terminated_before: bool) {
    if let Err(error) = result {
        match error {
            TransactionError::Terminated => assert!(terminated_before),
            TransactionError::InvalidStatus(status) => {
                assert!(!(100..=699).contains(&status))
            }
            TransactionError::ResponseNotAllowed { .. } | TransactionError::AckOnNonInvite => {}
        }
    } else {
        assert!(!terminated_before, "input accepted after termination");
    }
}

fn random_client(seed: u64, kind: Kind, reliable: bool) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let config = random_config(&mut rng);
    let bound = termination_bound(&config, reliable);
    let t0 = Instant::now();
    let mut now = t0;
    let mut tx = ClientTransaction::new(kind, reliable, config, now);
    let mut watch = ClientWatch::default();
    assert_eq!(watch.drain(&mut tx), vec![ClientAction::Transmit]);

    for _ in 0..rng.below(40) {
        now = advance(&mut rng, now);
        catch_up_client(&mut rng, &mut watch, &mut tx, now);
        let terminated_before = tx.is_terminated();
        if rng.below(20) == 0 {
            check_error(tx.on_transport_error(now), terminated_before);
            watch.drain(&mut tx);
            continue;
        }
        let status = rng.pick(&STATUSES);
        let result = tx.on_response(status, now);
        let accepted = result.is_ok();
        check_error(result, terminated_before);
        let actions = watch.drain(&mut tx);
        if accepted {
            let verdicts = actions
                .iter()
                .filter(|a| matches!(a, ClientAction::PassUp(_) | ClientAction::Absorb))
                .count();
            assert_eq!(verdicts, 1, "one verdict per response: {actions:?}");
            if let Some(ClientAction::PassUp(passed)) = actions
                .iter()
                .find(|a| matches!(a, ClientAction::PassUp(_)))
            {
                assert_eq!(*passed, status);
            }
        } else {
            assert!(actions.is_empty(), "rejected input produced {actions:?}");
        }
    }

    watch.run_timers(&mut tx, now + bound);
    if !tx.is_terminated() {
        // Only a state waiting for the peer with no timer may remain: the proxy's Timer C case.
        assert_eq!((kind, tx.state()), (Kind::Invite, ClientState::Proceeding));
        now += Duration::from_millis(rng.below(600_000));
        tx.on_response(rng.pick(&[200, 486]), now).unwrap();
        watch.drain(&mut tx);
        watch.run_timers(&mut tx, now + bound);
    }
    assert!(tx.is_terminated(), "client seed {seed} did not terminate");
}

fn random_server(seed: u64, kind: Kind, reliable: bool) {
    let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
    let config = random_config(&mut rng);
    let bound = termination_bound(&config, reliable);
    let t0 = Instant::now();
    let mut now = t0;
    let mut tx = ServerTransaction::new(kind, reliable, config, now);
    let mut watch = ServerWatch::default();
    watch.drain(&mut tx);

    for _ in 0..rng.below(40) {
        now = advance(&mut rng, now);
        catch_up_server(&mut rng, &mut watch, &mut tx, now);
        let terminated_before = tx.is_terminated();
        let (result, is_request) = match rng.below(10) {
            0..=3 => (tx.send_response(rng.pick(&STATUSES), now), false),
            4..=6 => (tx.on_request_retransmit(now), true),
            7 | 8 => (tx.on_ack(now), true),
            _ => (tx.on_transport_error(now), false),
        };
        let accepted = result.is_ok();
        check_error(result, terminated_before);
        let actions = watch.drain(&mut tx);
        if !accepted {
            assert!(actions.is_empty(), "rejected input produced {actions:?}");
        } else if is_request {
            let verdicts = actions
                .iter()
                .filter(|a| {
                    matches!(
                        a,
                        ServerAction::Transmit | ServerAction::Absorb | ServerAction::PassUpAck
                    )
                })
                .count();
            assert_eq!(verdicts, 1, "one verdict per request: {actions:?}");
        }
    }

    watch.run_timers(&mut tx, now + bound);
    if !tx.is_terminated() {
        // Only states waiting for the TU's response may remain.
        assert!(
            matches!(tx.state(), ServerState::Trying | ServerState::Proceeding),
            "stuck in {:?}",
            tx.state()
        );
        now += Duration::from_millis(rng.below(600_000));
        tx.send_response(rng.pick(&[200, 486]), now).unwrap();
        if kind == Kind::Invite && rng.below(2) == 0 {
            tx.on_ack(now + Duration::from_millis(rng.below(1_000)))
                .unwrap();
        }
        watch.drain(&mut tx);
        watch.run_timers(&mut tx, now + Duration::from_secs(1) + bound);
    }
    assert!(tx.is_terminated(), "server seed {seed} did not terminate");
}

#[test]
fn random_client_sequences_terminate_in_bound() {
    for seed in 0..SEEDS {
        for kind in [Kind::Invite, Kind::NonInvite] {
            for reliable in [false, true] {
                random_client(seed, kind, reliable);
            }
        }
    }
}

#[test]
fn random_server_sequences_terminate_in_bound() {
    for seed in 0..SEEDS {
        for kind in [Kind::Invite, Kind::NonInvite] {
            for reliable in [false, true] {
                random_server(seed, kind, reliable);
            }
        }
    }
}
