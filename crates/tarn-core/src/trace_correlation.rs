//! How strongly two trace filters go together (MLflow's `CalculateTraceFilterCorrelation`, an
//! insight of MLflow's UI): the traces each matches, both match and all, and their normalized
//! pointwise mutual information (NPMI, -1 never together … 0 independent … 1 always
//! together), plain and smoothed by Jeffreys' prior, as MLflow's SQL store computes them.

use crate::authz::{Action, Principal};
use crate::error::Result;
use crate::traces::Traces;
use tarn_spec::mlflow_search::Clause;

/// MLflow's `TraceFilterCorrelationResult`.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterCorrelation {
    /// NaN where undefined (a filter matches nothing).
    pub npmi: f64,
    pub npmi_smoothed: f64,
    pub filter1_count: i64,
    pub filter2_count: i64,
    pub joint_count: i64,
    pub total_count: i64,
}

/// Jeffreys' prior: half a count added to each cell.
const JEFFREYS_PRIOR: f64 = 0.5;

/// NPMI of a 2×2 table (both, only the first, only the second, neither) with `smoothing`
/// added to each cell.
fn npmi_core(n11: f64, n10: f64, n01: f64, n00: f64, smoothing: f64) -> f64 {
    let (s11, s10, s01, s00) = (
        n11 + smoothing,
        n10 + smoothing,
        n01 + smoothing,
        n00 + smoothing,
    );
    let n = s11 + s10 + s01 + s00;
    let (n1, n2) = (s11 + s10, s11 + s01);
    if n1 <= 0.0 || n2 <= 0.0 || s11 <= 0.0 {
        return f64::NAN;
    }
    if n10 == 0.0 && n01 == 0.0 && n00 == 0.0 {
        return 1.0;
    }
    let pmi = (s11.ln() + n.ln()) - (n1.ln() + n2.ln());
    let npmi = pmi / -(s11.ln() - n.ln());
    npmi.clamp(-1.0, 1.0)
}

/// Plain and smoothed NPMI from the counts.
fn npmi(joint: i64, first: i64, second: i64, total: i64) -> (f64, f64) {
    if total <= 0 || first == 0 || second == 0 {
        return (f64::NAN, f64::NAN);
    }
    let n11 = joint;
    let n10 = first - joint;
    let n01 = second - joint;
    let n00 = total - first - second + joint;
    if n11.min(n10).min(n01).min(n00) < 0 {
        return (f64::NAN, f64::NAN);
    }
    let cells = (n11 as f64, n10 as f64, n01 as f64, n00 as f64);
    let plain = if joint == 0 {
        -1.0
    } else {
        npmi_core(cells.0, cells.1, cells.2, cells.3, 0.0)
    };
    let smoothed = npmi_core(cells.0, cells.1, cells.2, cells.3, JEFFREYS_PRIOR);
    (plain, smoothed)
}

impl Traces {
    /// The correlation of two filters over the experiments' traces (those matching `base`,
    /// when given).
    pub async fn filter_correlation(
        &self,
        p: &Principal,
        workspace: &str,
        experiment_ids: &[String],
        filters: (&str, &str),
        base: Option<&str>,
    ) -> Result<FilterCorrelation> {
        let ws = self
            .tracking
            .tracking_workspace(p, workspace, Action::Read)
            .await?;
        let experiments = self.experiment_ids(&ws, experiment_ids).await?;
        let base = self.filter_clauses(&ws, base.unwrap_or_default()).await?;
        let first: Vec<Clause> =
            [base.clone(), self.filter_clauses(&ws, filters.0).await?].concat();
        let second: Vec<Clause> =
            [base.clone(), self.filter_clauses(&ws, filters.1).await?].concat();
        let both = [first.clone(), second.clone()].concat();
        let counts = self
            .store
            .count_traces(&ws.id, &experiments, &[base.clone(), first, second, both])
            .await?;
        let [total, filter1_count, filter2_count, joint_count] = counts[..] else {
            unreachable!("one count per set of clauses")
        };
        let (npmi, npmi_smoothed) = npmi(joint_count, filter1_count, filter2_count, total);
        Ok(FilterCorrelation {
            npmi,
            npmi_smoothed,
            filter1_count,
            filter2_count,
            joint_count,
            total_count: total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MLflow's own cases: 6 of 10 traces match both filters (7 the second) → a strong
    /// positive value; a filter matching nothing → undefined; never together → -1.
    #[test]
    fn npmi_follows_mlflows_rules() {
        let (plain, smoothed) = npmi(6, 6, 7, 10);
        assert!(0.6 < plain && plain < 0.8, "{plain}");
        assert!(smoothed.is_finite() && smoothed < plain);
        assert!(npmi(3, 4, 3, 10).0 > 0.5);
        assert!(npmi(0, 0, 7, 10).0.is_nan());
        assert_eq!(npmi(0, 3, 7, 10).0, -1.0);
        assert_eq!(npmi(5, 5, 5, 5).0, 1.0);
        assert!(npmi(5, 4, 4, 10).0.is_nan(), "inconsistent counts");
    }
}
