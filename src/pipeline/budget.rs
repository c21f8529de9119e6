//! The time budget of one message: how much CPU the pipeline may spend on it before it
//! is quarantined and the mailbox goes on (`[limits] triage_budget` in mailtriage.toml).
//! It counts the CPU time of the thread that triages the message, not the clock on the
//! wall, so a machine busy with other work does not push an ordinary message over it.
//! The pipeline looks at it between its stages; every stage is bounded in its input
//! (the parser's and the matcher's caps), so a message cannot hold a stage for long.

use std::time::Duration;

/// The CPU time one message may take, counted from [`Budget::start`] on this thread.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// `None`: no limit (`explain`, `triage` of files, the rule tests).
    limit: Option<Duration>,
    /// This thread's CPU time when the message was taken up.
    from: Duration,
}

/// A message took more CPU than its budget; it is quarantined with this as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("took more than its time budget of {} CPU (limits.triage_budget): {} by the end of {stage}", humantime::format_duration(*.limit), humantime::format_duration(*.spent))]
pub struct OverBudget {
    pub limit: Duration,
    pub spent: Duration,
    /// The stage after which it was seen.
    pub stage: &'static str,
}

impl Budget {
    /// No limit.
    pub fn unlimited() -> Budget {
        Budget {
            limit: None,
            from: Duration::ZERO,
        }
    }

    /// A budget of `limit` starting now, on the calling thread.
    pub fn start(limit: Duration) -> Budget {
        Budget {
            limit: Some(limit),
            from: thread_cpu(),
        }
    }

    /// CPU time spent on this thread since the start.
    pub fn spent(&self) -> Duration {
        thread_cpu().saturating_sub(self.from)
    }

    /// Whether the message is still within its budget after `stage`.
    pub fn check(&self, stage: &'static str) -> Result<(), OverBudget> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let spent = self.spent();
        if spent > limit {
            return Err(OverBudget {
                limit,
                spent: Duration::from_millis(spent.as_millis() as u64),
                stage,
            });
        }
        Ok(())
    }
}

/// The calling thread's CPU time (user and system).
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work the optimiser cannot drop.
    fn spin(d: Duration) {
        let end = thread_cpu() + d;
        let mut x = 0u64;
        while thread_cpu() < end {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[test]
    fn a_budget_counts_this_thread_s_cpu_and_says_where_it_ran_out() {
        let b = Budget::start(Duration::from_millis(20));
        assert_eq!(b.check("parse"), Ok(()));
        // Sleeping costs no CPU: the budget is not a clock on the wall.
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.check("parse"), Ok(()));
        spin(Duration::from_millis(30));
        let over = b.check("classify and decide").unwrap_err();
        assert_eq!(over.stage, "classify and decide");
        assert!(over.spent >= Duration::from_millis(30), "{over:?}");
        assert!(
            over.to_string().contains("20ms CPU (limits.triage_budget)"),
            "{over}"
        );
        assert_eq!(Budget::unlimited().check("compose"), Ok(()));
    }
}
