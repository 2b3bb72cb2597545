//! The check state machine (pure, no I/O): turns a stream of probe results into status
//! *changes*, honouring `success_before_passing` and `failures_before_critical`.
//!
//! A new check starts critical with no history. A passing probe counts toward passing and
//! clears the failure count; a critical probe counts toward critical and clears the success
//! count; a warning probe (HTTP 429) moves to warning at once and clears both, since it is an
//! explicit answer from the target rather than a flap.

use crate::model::Status;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckState {
    status: Status,
    successes: u32,
    failures: u32,
    success_before_passing: u32,
    failures_before_critical: u32,
}

impl CheckState {
    /// A new check: critical until it has passed `success_before_passing` times in a row.
    pub(crate) fn new(success_before_passing: u32, failures_before_critical: u32) -> Self {
        Self {
            status: Status::Critical,
            successes: 0,
            failures: 0,
            success_before_passing: success_before_passing.max(1),
            failures_before_critical: failures_before_critical.max(1),
        }
    }

    /// A check taken over at `status` (stored by its previous owner): as if that status had
    /// just been reached, so one probe that agrees changes nothing and the thresholds count
    /// from here.
    pub(crate) fn resume(
        status: Status,
        success_before_passing: u32,
        failures_before_critical: u32,
    ) -> Self {
        let mut s = Self::new(success_before_passing, failures_before_critical);
        s.status = status;
        match status {
            Status::Passing => s.successes = s.success_before_passing,
            Status::Critical => s.failures = s.failures_before_critical,
            Status::Warning => {}
        }
        s
    }

    pub(crate) fn status(&self) -> Status {
        self.status
    }

    /// Feeds one probe result; returns the new status when it changed.
    pub(crate) fn observe(&mut self, probe: Status) -> Option<Status> {
        let next = match probe {
            Status::Passing => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                (self.successes >= self.success_before_passing).then_some(Status::Passing)
            }
            Status::Critical => {
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                (self.failures >= self.failures_before_critical).then_some(Status::Critical)
            }
            Status::Warning => {
                self.successes = 0;
                self.failures = 0;
                Some(Status::Warning)
            }
        };
        match next {
            Some(s) if s != self.status => {
                self.status = s;
                Some(s)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status::*;

    /// success_before_passing, failures_before_critical, probe results, expected changes.
    type Case = (u32, u32, &'static [Status], &'static [(usize, Status)]);

    /// Feeds `probes` and returns the changes reported, as (probe index, new status).
    fn run(sbp: u32, fbc: u32, probes: &[Status]) -> Vec<(usize, Status)> {
        let mut s = CheckState::new(sbp, fbc);
        probes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| s.observe(*p).map(|n| (i, n)))
            .collect()
    }

    #[test]
    fn table() {
        let cases: &[Case] = &[
            // First pass turns a new check passing; only changes are reported.
            (1, 1, &[Passing, Passing, Passing], &[(0, Passing)]),
            (1, 1, &[Critical, Critical], &[]),
            (
                1,
                1,
                &[Passing, Critical, Passing],
                &[(0, Passing), (1, Critical), (2, Passing)],
            ),
            // Thresholds count consecutive results.
            (
                3,
                1,
                &[Passing, Passing, Critical, Passing, Passing, Passing],
                &[(5, Passing)],
            ),
            (
                1,
                3,
                &[
                    Passing, Critical, Critical, Passing, Critical, Critical, Critical,
                ],
                &[(0, Passing), (6, Critical)],
            ),
            // Warning is immediate, and thresholds restart after it.
            (
                1,
                2,
                &[Passing, Warning, Critical, Critical],
                &[(0, Passing), (1, Warning), (3, Critical)],
            ),
            (
                2,
                1,
                &[Warning, Passing, Passing],
                &[(0, Warning), (2, Passing)],
            ),
        ];
        for (sbp, fbc, probes, want) in cases {
            assert_eq!(
                run(*sbp, *fbc, probes),
                *want,
                "sbp={sbp} fbc={fbc} {probes:?}"
            );
        }
    }

    #[test]
    fn zero_thresholds_mean_one() {
        let mut s = CheckState::new(0, 0);
        assert_eq!(s.observe(Passing), Some(Passing));
        assert_eq!(s.observe(Critical), Some(Critical));
        assert_eq!(s.status(), Critical);
    }
}
