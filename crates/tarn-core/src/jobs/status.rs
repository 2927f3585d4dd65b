//! The job lifecycle, as Azure ML names it: NotStarted → Queued → Preparing → Running →
//! Finalizing → Completed | Failed | Canceled, with CancelRequested in between when a user
//! cancels. One table says which transitions exist; every writer goes through [`next`].

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JobStatus {
    NotStarted,
    Queued,
    Preparing,
    Running,
    Finalizing,
    CancelRequested,
    Completed,
    Failed,
    Canceled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 9] = [
        JobStatus::NotStarted,
        JobStatus::Queued,
        JobStatus::Preparing,
        JobStatus::Running,
        JobStatus::Finalizing,
        JobStatus::CancelRequested,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Canceled,
    ];

    /// States in which a runner owns the job (it holds nodes).
    pub const ON_NODES: [JobStatus; 4] = [
        JobStatus::Preparing,
        JobStatus::Running,
        JobStatus::Finalizing,
        JobStatus::CancelRequested,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::NotStarted => "NotStarted",
            JobStatus::Queued => "Queued",
            JobStatus::Preparing => "Preparing",
            JobStatus::Running => "Running",
            JobStatus::Finalizing => "Finalizing",
            JobStatus::CancelRequested => "CancelRequested",
            JobStatus::Completed => "Completed",
            JobStatus::Failed => "Failed",
            JobStatus::Canceled => "Canceled",
        }
    }

    /// Accepts any case: `completed`, `Completed`.
    pub fn parse(text: &str) -> Option<JobStatus> {
        JobStatus::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled
        )
    }

    /// MLflow's name for the state of the job's run.
    pub fn mlflow(self) -> &'static str {
        match self {
            JobStatus::NotStarted | JobStatus::Queued | JobStatus::Preparing => "SCHEDULED",
            JobStatus::Running | JobStatus::Finalizing | JobStatus::CancelRequested => "RUNNING",
            JobStatus::Completed => "FINISHED",
            JobStatus::Failed => "FAILED",
            JobStatus::Canceled => "KILLED",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a report asks for and what the job's status becomes. A runner reporting `Running` on a
/// job whose user asked to cancel keeps it at CancelRequested (the runner learns of the request
/// from the reply); anything leaving a terminal state, or going backwards, is refused.
pub fn next(current: JobStatus, wanted: JobStatus) -> Option<JobStatus> {
    use JobStatus::*;
    if current.is_terminal() {
        return None;
    }
    match (current, wanted) {
        (a, b) if a == b => Some(a),
        (CancelRequested, Preparing | Running | Finalizing) => Some(CancelRequested),
        (CancelRequested, Completed | Failed | Canceled) => Some(wanted),
        (_, CancelRequested) => Some(CancelRequested),
        (_, Canceled | Failed) => Some(wanted),
        (NotStarted, Queued) => Some(Queued),
        (Queued, Preparing) => Some(Preparing),
        (Preparing, Running) | (Preparing, Finalizing) => Some(wanted),
        (Running, Finalizing) => Some(Finalizing),
        (Running | Finalizing, Completed) => Some(Completed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::JobStatus::*;
    use super::*;

    #[test]
    fn transitions() {
        let cases: &[(JobStatus, JobStatus, Option<JobStatus>)] = &[
            (Queued, Preparing, Some(Preparing)),
            (Preparing, Running, Some(Running)),
            (Running, Finalizing, Some(Finalizing)),
            (Finalizing, Completed, Some(Completed)),
            (Running, Failed, Some(Failed)),
            (Queued, Canceled, Some(Canceled)),
            (Running, CancelRequested, Some(CancelRequested)),
            (CancelRequested, Running, Some(CancelRequested)),
            (CancelRequested, Canceled, Some(Canceled)),
            (CancelRequested, Completed, Some(Completed)),
            (Completed, Failed, None),
            (Canceled, Running, None),
            (Running, Preparing, None),
            (Queued, Completed, None),
            (Queued, Running, None),
        ];
        for (from, to, want) in cases {
            assert_eq!(next(*from, *to), *want, "{from} -> {to}");
        }
    }

    #[test]
    fn names_round_trip_and_map_to_mlflow() {
        for s in JobStatus::ALL {
            assert_eq!(JobStatus::parse(&s.as_str().to_lowercase()), Some(s));
        }
        assert_eq!(Queued.mlflow(), "SCHEDULED");
        assert_eq!(Running.mlflow(), "RUNNING");
        assert_eq!(Completed.mlflow(), "FINISHED");
        assert_eq!(Failed.mlflow(), "FAILED");
        assert_eq!(Canceled.mlflow(), "KILLED");
    }
}
