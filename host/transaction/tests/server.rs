//! Server transactions against RFC 3261 Figures 7 and 8 and RFC 6026's updated Figure 7.
//! Time is driven explicitly: every deadline is reached by calling `handle_timeout` at it.

use std::time::{Duration, Instant};

use siphost_transaction::{
    Kind, ServerAction, ServerState, ServerTransaction, Timer, TimerConfig, TransactionError,
};

use ServerAction::{Absorb, PassUpAck, SendTrying, Terminated, Timeout, Transmit, TransportError};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn drain(tx: &mut ServerTransaction) -> Vec<ServerAction> {
    std::iter::from_fn(|| tx.poll_action()).collect()
}

fn run_timers(tx: &mut ServerTransaction, start: Instant) -> Vec<(u128, ServerAction)> {
    let mut seen = Vec::new();
    let mut last = start;
    while let Some(at) = tx.poll_timeout() {
        assert!(at >= last, "deadline moved backwards");
        last = at;
        tx.handle_timeout(at);
        for action in drain(tx) {
            seen.push(((at - start).as_millis(), action));
        }
    }
    seen
}

fn invite_server(reliable: bool, now: Instant) -> ServerTransaction {
    let mut tx = ServerTransaction::new(Kind::Invite, reliable, TimerConfig::default(), now);
    assert_eq!(drain(&mut tx), vec![SendTrying]);
    assert_eq!(tx.state(), ServerState::Proceeding);
    tx
}

fn non_invite_server(reliable: bool, now: Instant) -> ServerTransaction {
    let mut tx = ServerTransaction::new(Kind::NonInvite, reliable, TimerConfig::default(), now);
    assert_eq!(drain(&mut tx), vec![]);
    assert_eq!(tx.state(), ServerState::Trying);
    tx
}

#[test]
fn invite_proceeding_resends_latest_provisional_and_has_no_timer() {
    let t0 = Instant::now();
    let mut tx = invite_server(false, t0);
    assert_eq!(tx.poll_timeout(), None);
    // The 100 from SendTrying is the latest response.
    tx.on_request_retransmit(t0 + ms(500)).unwrap();
    assert_eq!(drain(&mut tx), vec![Transmit]);
    tx.send_response(180, t0 + ms(600)).unwrap();
    assert_eq!(drain(&mut tx), vec![]);
    tx.on_request_retransmit(t0 + ms(1_500)).unwrap();
    assert_eq!(drain(&mut tx), vec![Transmit]);
    assert_eq!(tx.state(), ServerState::Proceeding);
    // An ACK before any final response acknowledges nothing.
    tx.on_ack(t0 + ms(1_600)).unwrap();
    assert_eq!(drain(&mut tx), vec![Absorb]);
    assert_eq!(tx.state(), ServerState::Proceeding);
}

#[test]
fn invite_udp_failure_retransmits_with_timer_g_until_timer_h() {
    let t0 = Instant::now();
    let mut tx = invite_server(false, t0);
    tx.send_response(486, t0).unwrap();
    assert_eq!(tx.state(), ServerState::Completed);
    let mut timers: Vec<_> = tx.timers().collect();
    timers.sort_by_key(|(_, at)| *at);
    assert_eq!(
        timers,
        vec![(Timer::G, t0 + ms(500)), (Timer::H, t0 + ms(32_000))]
    );

    let seen = run_timers(&mut tx, t0);
    let transmits: Vec<u128> = seen
        .iter()
        .filter(|(_, action)| *action == Transmit)
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(
        transmits,
        vec![
            500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500
        ]
    );
    assert_eq!(
        seen[seen.len() - 2..],
        [(32_000, Timeout), (32_000, Terminated)]
    );
}

#[test]
fn invite_udp_ack_confirms_stops_g_absorbs_and_waits_timer_i() {
    let t0 = Instant::now();
    let mut tx = invite_server(false, t0);
    tx.send_response(404, t0).unwrap();
    tx.handle_timeout(t0 + ms(500));
    assert_eq!(drain(&mut tx), vec![Transmit]);
    // Completed: a retransmitted INVITE re-sends the final response.
    tx.on_request_retransmit(t0 + ms(800)).unwrap();
    assert_eq!(drain(&mut tx), vec![Transmit]);
    assert_eq!(
        tx.send_response(200, t0 + ms(900)),
        Err(TransactionError::ResponseNotAllowed {
            status: 200,
            state: ServerState::Completed
        })
    );

    tx.on_ack(t0 + ms(1_000)).unwrap();
    assert_eq!(drain(&mut tx), vec![Absorb]);
    assert_eq!(tx.state(), ServerState::Confirmed);
    assert_eq!(
        tx.timers().collect::<Vec<_>>(),
        vec![(Timer::I, t0 + ms(6_000))]
    );

    tx.on_ack(t0 + ms(1_100)).unwrap();
    tx.on_request_retransmit(t0 + ms(1_200)).unwrap();
    assert_eq!(drain(&mut tx), vec![Absorb, Absorb]);
    assert_eq!(
        tx.send_response(500, t0 + ms(1_300)),
        Err(TransactionError::ResponseNotAllowed {
            status: 500,
            state: ServerState::Confirmed
        })
    );
    let seen = run_timers(&mut tx, t0);
    assert_eq!(seen, vec![(6_000, Terminated)]);
}

#[test]
fn invite_tcp_failure_has_no_timer_g_and_ack_terminates_at_once() {
    let t0 = Instant::now();
    let mut tx = invite_server(true, t0);
    tx.send_response(486, t0).unwrap();
    assert_eq!(
        tx.timers().collect::<Vec<_>>(),
        vec![(Timer::H, t0 + ms(32_000))]
    );
    tx.on_ack(t0 + ms(50)).unwrap();
    assert_eq!(drain(&mut tx), vec![Absorb, Terminated]);

    let mut unacked = invite_server(true, t0);
    unacked.send_response(486, t0).unwrap();
    let seen = run_timers(&mut unacked, t0);
    assert_eq!(seen, vec![(32_000, Timeout), (32_000, Terminated)]);
}

#[test]
fn invite_2xx_enters_accepted_absorbs_invites_passes_acks_until_timer_l() {
    for reliable in [false, true] {
        let t0 = Instant::now();
        let mut tx = invite_server(reliable, t0);
        tx.send_response(180, t0).unwrap();
        tx.send_response(200, t0 + ms(1_000)).unwrap();
        assert_eq!(tx.state(), ServerState::Accepted);
        assert_eq!(
            tx.timers().collect::<Vec<_>>(),
            vec![(Timer::L, t0 + ms(33_000))]
        );

        tx.on_request_retransmit(t0 + ms(1_500)).unwrap();
        assert_eq!(drain(&mut tx), vec![Absorb]);
        // 2xx retransmissions and forked 2xx from the TU go out; nothing else may.
        tx.send_response(200, t0 + ms(2_000)).unwrap();
        tx.send_response(299, t0 + ms(2_000)).unwrap();
        for status in [100, 183, 486, 699] {
            assert_eq!(
                tx.send_response(status, t0 + ms(2_000)),
                Err(TransactionError::ResponseNotAllowed {
                    status,
                    state: ServerState::Accepted
                })
            );
        }
        tx.on_ack(t0 + ms(2_500)).unwrap();
        assert_eq!(drain(&mut tx), vec![PassUpAck]);
        assert_eq!(tx.state(), ServerState::Accepted);

        let seen = run_timers(&mut tx, t0);
        assert_eq!(seen, vec![(33_000, Terminated)], "reliable={reliable}");
    }
}

#[test]
fn invite_transport_error_informs_tu_and_keeps_state() {
    let t0 = Instant::now();
    let mut proceeding = invite_server(false, t0);
    proceeding.on_transport_error(t0).unwrap();
    assert_eq!(drain(&mut proceeding), vec![TransportError]);
    assert_eq!(proceeding.state(), ServerState::Proceeding);

    let mut completed = invite_server(false, t0);
    completed.send_response(503, t0).unwrap();
    completed.on_transport_error(t0 + ms(100)).unwrap();
    assert_eq!(drain(&mut completed), vec![TransportError]);
    assert_eq!(completed.state(), ServerState::Completed);
    // Timer H still bounds it.
    let seen = run_timers(&mut completed, t0);
    assert_eq!(seen.last(), Some(&(32_000, Terminated)));

    let mut accepted = invite_server(false, t0);
    accepted.send_response(200, t0).unwrap();
    accepted.on_transport_error(t0).unwrap();
    assert_eq!(drain(&mut accepted), vec![TransportError]);
    assert_eq!(accepted.state(), ServerState::Accepted);

    let mut confirmed = invite_server(false, t0);
    confirmed.send_response(486, t0).unwrap();
    confirmed.on_ack(t0).unwrap();
    drain(&mut confirmed);
    confirmed.on_transport_error(t0).unwrap();
    assert_eq!(drain(&mut confirmed), vec![TransportError]);
    assert_eq!(confirmed.state(), ServerState::Confirmed);
}

#[test]
fn non_invite_udp_full_life() {
    let t0 = Instant::now();
    let mut tx = non_invite_server(false, t0);
    // Trying: nothing sent yet, so a retransmission is simply dropped.
    tx.on_request_retransmit(t0 + ms(500)).unwrap();
    assert_eq!(drain(&mut tx), vec![Absorb]);
    assert_eq!(tx.poll_timeout(), None);

    tx.send_response(100, t0 + ms(600)).unwrap();
    assert_eq!(tx.state(), ServerState::Proceeding);
    tx.on_request_retransmit(t0 + ms(1_500)).unwrap();
    assert_eq!(drain(&mut tx), vec![Transmit]);
    tx.send_response(183, t0 + ms(1_600)).unwrap();
    assert_eq!(tx.state(), ServerState::Proceeding);

    tx.send_response(200, t0 + ms(2_000)).unwrap();
    assert_eq!(tx.state(), ServerState::Completed);
    assert_eq!(
        tx.timers().collect::<Vec<_>>(),
        vec![(Timer::J, t0 + ms(34_000))]
    );
    tx.on_request_retransmit(t0 + ms(3_500)).unwrap();
    assert_eq!(drain(&mut tx), vec![Transmit]);
    for status in [100, 200, 486] {
        assert_eq!(
            tx.send_response(status, t0 + ms(4_000)),
            Err(TransactionError::ResponseNotAllowed {
                status,
                state: ServerState::Completed
            })
        );
    }
    let seen = run_timers(&mut tx, t0);
    assert_eq!(seen, vec![(34_000, Terminated)]);
}

#[test]
fn non_invite_final_from_trying_completes() {
    let t0 = Instant::now();
    let mut tx = non_invite_server(false, t0);
    tx.send_response(481, t0).unwrap();
    assert_eq!(tx.state(), ServerState::Completed);
    assert_eq!(drain(&mut tx), vec![]);
}

#[test]
fn non_invite_tcp_final_terminates_at_once() {
    let t0 = Instant::now();
    let mut tx = non_invite_server(true, t0);
    tx.send_response(200, t0).unwrap();
    assert_eq!(drain(&mut tx), vec![Terminated]);
    assert!(tx.is_terminated());
}

#[test]
fn non_invite_transport_error_terminates() {
    let t0 = Instant::now();
    for final_first in [false, true] {
        let mut tx = non_invite_server(false, t0);
        if final_first {
            tx.send_response(200, t0).unwrap();
        }
        tx.on_transport_error(t0).unwrap();
        assert_eq!(drain(&mut tx), vec![TransportError, Terminated]);
        assert_eq!(tx.poll_timeout(), None);
    }
}

#[test]
fn misuse_is_a_typed_error_and_changes_nothing() {
    let t0 = Instant::now();
    let mut tx = non_invite_server(false, t0);
    assert_eq!(tx.on_ack(t0), Err(TransactionError::AckOnNonInvite));
    for bad in [0, 99, 700, u16::MAX] {
        assert_eq!(
            tx.send_response(bad, t0),
            Err(TransactionError::InvalidStatus(bad))
        );
    }
    assert_eq!(tx.state(), ServerState::Trying);
    assert_eq!(drain(&mut tx), vec![]);

    let mut done = invite_server(true, t0);
    done.send_response(486, t0).unwrap();
    done.on_ack(t0).unwrap();
    assert!(done.is_terminated());
    drain(&mut done);
    assert_eq!(
        done.send_response(200, t0),
        Err(TransactionError::Terminated)
    );
    assert_eq!(done.on_ack(t0), Err(TransactionError::Terminated));
    assert_eq!(
        done.on_request_retransmit(t0),
        Err(TransactionError::Terminated)
    );
    assert_eq!(
        done.on_transport_error(t0),
        Err(TransactionError::Terminated)
    );
    done.handle_timeout(t0 + ms(100_000));
    assert_eq!(drain(&mut done), vec![]);
}

#[test]
fn late_caller_gets_one_transmit_for_missed_timer_g_deadlines() {
    let t0 = Instant::now();
    let mut tx = invite_server(false, t0);
    tx.send_response(486, t0).unwrap();
    tx.handle_timeout(t0 + ms(4_000));
    assert_eq!(drain(&mut tx), vec![Transmit]);
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(7_500)));
}

#[test]
fn timer_config_formulas_and_validation() {
    let config = TimerConfig::default();
    assert_eq!(
        (config.t1(), config.t2(), config.t4()),
        (ms(500), ms(4_000), ms(5_000))
    );
    for (value, expected) in [
        (config.timer_a_initial(), ms(500)),
        (config.timer_b(), ms(32_000)),
        (config.timer_d(false), ms(32_000)),
        (config.timer_d(true), Duration::ZERO),
        (config.timer_e_initial(), ms(500)),
        (config.timer_f(), ms(32_000)),
        (config.timer_g_initial(), ms(500)),
        (config.timer_h(), ms(32_000)),
        (config.timer_i(false), ms(5_000)),
        (config.timer_i(true), Duration::ZERO),
        (config.timer_j(false), ms(32_000)),
        (config.timer_j(true), Duration::ZERO),
        (config.timer_k(false), ms(5_000)),
        (config.timer_k(true), Duration::ZERO),
        (config.timer_l(), ms(32_000)),
        (config.timer_m(), ms(32_000)),
    ] {
        assert_eq!(value, expected);
    }
    use siphost_transaction::ConfigError;
    assert_eq!(
        TimerConfig::new(Duration::ZERO, ms(4_000), ms(5_000)),
        Err(ConfigError::ZeroT1)
    );
    assert_eq!(
        TimerConfig::new(ms(500), ms(400), ms(5_000)),
        Err(ConfigError::T2BelowT1)
    );
    assert_eq!(
        TimerConfig::new(ms(500), ms(4_000), ms(601_000)),
        Err(ConfigError::TooLong)
    );
    let slow = TimerConfig::new(ms(2_000), ms(8_000), ms(10_000)).unwrap();
    assert_eq!(slow.timer_h(), ms(128_000));
    assert_eq!(slow.timer_d(false), ms(128_000));
}

#[test]
fn only_the_waits_that_end_a_transaction_count_as_only_waiting() {
    let t0 = Instant::now();
    // INVITE: Proceeding has no timer; Completed retransmits (G) and gives up (H); Confirmed
    // only waits (I).
    let mut tx = invite_server(false, t0);
    assert!(!tx.only_waiting(), "no timer armed");
    tx.send_response(404, t0).unwrap();
    assert!(!tx.only_waiting(), "Timer G retransmits");
    tx.on_ack(t0 + ms(100)).unwrap();
    assert!(tx.only_waiting(), "Timer I only ends it");
    // RFC 6026 Accepted only waits (L).
    let mut tx = invite_server(false, t0);
    tx.send_response(200, t0).unwrap();
    assert_eq!(tx.state(), ServerState::Accepted);
    assert!(tx.only_waiting());
    // Non-INVITE: Completed only waits (J).
    let mut tx = non_invite_server(false, t0);
    assert!(!tx.only_waiting());
    tx.send_response(200, t0).unwrap();
    assert_eq!(tx.state(), ServerState::Completed);
    assert!(tx.only_waiting());
    assert!(Timer::J.only_ends_wait() && !Timer::H.only_ends_wait());
}
