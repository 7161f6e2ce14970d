//! The job model: which status changes a job may go through, and who may make them.
//!
//! [`TRANSITIONS`] is the one table of the job state machine. The agent status report
//! (`POST /api/v1/agents/{id}/jobs/{job_id}/status`) asks [`check_agent_report`] before it
//! writes anything, so an agent can no longer move its jobs anywhere it likes — e.g. mark an
//! `AwaitingCSR` renewal `Completed` without ever sending the CSR (no version would exist and the
//! certificate would stay `RenewalInProgress`). The other rows document what the scheduler, the
//! CSR submission and the API do (their guarded UPDATEs make the same moves).

/// Who changes a job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    /// The agent, through its status report.
    Agent,
    /// The agent's CSR submission (`POST …/csr`), which signs and stores a version.
    CsrSubmission,
    /// The scheduler's loops (job processor, timeouts, retry, offline-agent reaper).
    Scheduler,
    /// An API caller (`POST /api/v1/jobs/{id}/cancel`, certificate archive/revoke).
    Api,
}

/// Which job types a transition applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Issuance` and `Renewal`: they end with a signed version.
    Signing,
    /// `Deployment`: an agent installs an existing version.
    Deployment,
    /// Every type.
    Any,
}

impl Kind {
    fn covers(self, job_type: &str) -> bool {
        match self {
            Kind::Signing => matches!(job_type, "Issuance" | "Renewal"),
            Kind::Deployment => job_type == "Deployment",
            Kind::Any => true,
        }
    }
}

/// One allowed status change.
#[derive(Debug, Clone, Copy)]
pub struct Transition {
    /// Job types it applies to.
    pub kind: Kind,
    /// Status before.
    pub from: &'static str,
    /// Status after.
    pub to: &'static str,
    /// Who may make it.
    pub by: &'static [Actor],
}

const fn t(kind: Kind, from: &'static str, to: &'static str, by: &'static [Actor]) -> Transition {
    Transition { kind, from, to, by }
}

use Actor::{Agent, Api, CsrSubmission, Scheduler};

/// Every status change the job model allows. Anything not listed is refused.
pub const TRANSITIONS: &[Transition] = &[
    // Issuance and renewal: the processor claims a due job for server-side keygen (`Running`)
    // or, when the certificate has an agent, hands it to the agent (`AwaitingCSR`).
    t(Kind::Signing, "Pending", "Running", &[Scheduler]),
    t(Kind::Signing, "Pending", "AwaitingCSR", &[Scheduler]),
    t(Kind::Signing, "Running", "Completed", &[Scheduler]),
    t(Kind::Signing, "Running", "Failed", &[Scheduler]),
    // Only a CSR completes an agent's job: the submission signs and stores the version. The
    // agent itself may only give up (it cannot make a key or a CSR); so may the timeout sweep.
    t(Kind::Signing, "AwaitingCSR", "Completed", &[CsrSubmission]),
    t(Kind::Signing, "AwaitingCSR", "Failed", &[Agent, Scheduler]),
    t(Kind::Signing, "Failed", "Pending", &[Scheduler]),
    // Deployments: the work poll claims them (`Running`); the agent reports progress and the end.
    t(Kind::Deployment, "Pending", "Running", &[Agent]),
    t(Kind::Deployment, "Running", "Running", &[Agent]),
    t(Kind::Deployment, "Running", "Completed", &[Agent]),
    t(Kind::Deployment, "Running", "Failed", &[Agent, Scheduler]),
    // Any open job can be cancelled through the API.
    t(Kind::Any, "Pending", "Cancelled", &[Api]),
    t(Kind::Any, "AwaitingCSR", "Cancelled", &[Api]),
    t(Kind::Any, "AwaitingApproval", "Cancelled", &[Api]),
    t(Kind::Any, "Running", "Cancelled", &[Api]),
];

/// Statuses a job never leaves (except a failed signing job's retry by the scheduler).
pub const FINISHED: &[&str] = &["Completed", "Failed", "Cancelled"];

/// Whether `by` may move a `job_type` job from `from` to `to`.
pub fn allowed(by: Actor, job_type: &str, from: &str, to: &str) -> bool {
    TRANSITIONS.iter().any(|t| t.from == from && t.to == to && t.kind.covers(job_type) && t.by.contains(&by))
}

/// Why an agent's status report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The job already finished.
    #[error("job is already {0}")]
    Finished(String),
    /// The job model does not let an agent make this change.
    #[error("an agent cannot move a {job_type} job from {from} to {to}{hint}")]
    NotAllowed {
        /// Job type.
        job_type: String,
        /// Current status.
        from: String,
        /// Reported status.
        to: String,
        /// What to do instead, when there is a better way.
        hint: &'static str,
    },
}

/// Checks an agent's report that its `job_type` job, now `from`, is `to`.
pub fn check_agent_report(job_type: &str, from: &str, to: &str) -> Result<(), Refusal> {
    if FINISHED.contains(&from) {
        return Err(Refusal::Finished(from.to_string()));
    }
    if allowed(Agent, job_type, from, to) {
        return Ok(());
    }
    let hint = if from == "AwaitingCSR" && to == "Completed" {
        " (submit the CSR: POST /api/v1/agents/{id}/csr completes the job)"
    } else {
        ""
    };
    Err(Refusal::NotAllowed { job_type: job_type.into(), from: from.into(), to: to.into(), hint })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::extract::{JOB_STATUSES, JOB_TYPES};

    #[test]
    fn an_awaiting_csr_job_is_completed_only_by_its_csr() {
        for job_type in ["Issuance", "Renewal"] {
            assert!(check_agent_report(job_type, "AwaitingCSR", "Completed").is_err());
            assert!(allowed(Actor::CsrSubmission, job_type, "AwaitingCSR", "Completed"));
            assert!(check_agent_report(job_type, "AwaitingCSR", "Failed").is_ok());
            // Server-side keygen jobs are the scheduler's, not the agent's.
            assert!(check_agent_report(job_type, "Running", "Completed").is_err());
        }
    }

    #[test]
    fn deployments_follow_claim_progress_end() {
        assert!(check_agent_report("Deployment", "Pending", "Running").is_ok());
        assert!(check_agent_report("Deployment", "Running", "Completed").is_ok());
        assert!(check_agent_report("Deployment", "Running", "Failed").is_ok());
        assert!(check_agent_report("Deployment", "Pending", "Completed").is_err());
        assert!(check_agent_report("Deployment", "Running", "Pending").is_err());
        assert_eq!(check_agent_report("Deployment", "Completed", "Failed"), Err(Refusal::Finished("Completed".into())));
    }

    #[test]
    fn the_table_uses_only_known_statuses_and_an_agent_never_cancels() {
        for t in TRANSITIONS {
            assert!(JOB_STATUSES.contains(&t.from) && JOB_STATUSES.contains(&t.to), "{t:?}");
        }
        for job_type in JOB_TYPES {
            for from in JOB_STATUSES {
                for to in ["Cancelled", "Pending", "AwaitingCSR", "AwaitingApproval"] {
                    assert!(check_agent_report(job_type, from, to).is_err(), "{job_type} {from} -> {to}");
                }
            }
        }
    }
}
