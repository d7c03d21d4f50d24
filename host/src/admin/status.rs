//! The status page (`GET /status`, self-contained HTML whose script reads `/RPC`) and the
//! rate history its chart plots, sampled by the host every few seconds.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::metrics::HostMetrics;

/// The page: no external script, style sheet or font, so it works offline.
pub const PAGE: &str = include_str!("status.html");

/// How often the host samples the totals the chart plots.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: ten minutes at [`SAMPLE_EVERY`].
const SAMPLES_KEPT: usize = 300;

/// One point of the chart: the rates between a sample and the one before.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RatePoint {
    /// Seconds since the Unix epoch at the end of the interval.
    pub at: f64,
    pub calls_per_s: f64,
    pub registers_per_s: f64,
}

/// The last [`SAMPLES_KEPT`] samples of the call and REGISTER totals.
#[derive(Debug, Default)]
pub struct RateHistory {
    samples: VecDeque<(f64, u64, u64)>,
}

impl RateHistory {
    /// Adds a sample taken at `at` (seconds); one not after the last is ignored.
    pub fn record(&mut self, at: f64, calls: u64, registers: u64) {
        if self.samples.back().is_some_and(|(last, ..)| *last >= at) {
            return;
        }
        if self.samples.len() == SAMPLES_KEPT {
            self.samples.pop_front();
        }
        self.samples.push_back((at, calls, registers));
    }

    pub fn points(&self) -> Vec<RatePoint> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(&(t0, c0, r0), &(t1, c1, r1))| {
                let span = t1 - t0;
                RatePoint {
                    at: t1,
                    calls_per_s: c1.saturating_sub(c0) as f64 / span,
                    registers_per_s: r1.saturating_sub(r0) as f64 / span,
                }
            })
            .collect()
    }
}

/// Samples the totals every [`SAMPLE_EVERY`] until the task is dropped.
pub async fn run_sampler(metrics: Arc<HostMetrics>) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tick.tick().await;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics.sample_rates(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_between_samples_and_a_bounded_window() {
        let mut history = RateHistory::default();
        assert!(history.points().is_empty());
        history.record(100.0, 0, 0);
        history.record(102.0, 10, 4);
        history.record(102.0, 99, 99);
        history.record(104.0, 10, 10);
        assert_eq!(
            history.points(),
            vec![
                RatePoint {
                    at: 102.0,
                    calls_per_s: 5.0,
                    registers_per_s: 2.0
                },
                RatePoint {
                    at: 104.0,
                    calls_per_s: 0.0,
                    registers_per_s: 3.0
                },
            ]
        );
        for i in 0..1000u64 {
            history.record(200.0 + i as f64, i, i);
        }
        assert_eq!(history.points().len(), SAMPLES_KEPT - 1);
    }

    #[test]
    fn page_is_self_contained() {
        // The SVG namespace is a name, not something fetched.
        let lower = PAGE
            .to_ascii_lowercase()
            .replace("\"http://www.w3.org/2000/svg\"", "");
        for external in ["http://", "https://", "<link", "src=", "@import", "url("] {
            assert!(
                !lower.contains(external),
                "status page refers to {external}"
            );
        }
    }
}
