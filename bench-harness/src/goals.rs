//! Goals a scenario carries (`[[goals]]` in its TOML): a figure of the run,
//! a bound on it, and the profile (and ingest format) it holds for. A run's
//! report measures the figures; this module only judges them, so that it
//! knows nothing of how a run was made.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// A figure a goal can bound. Names end in their unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Produce acknowledgement p99 of the measured window, in ms.
    ProduceP99Ms,
    /// Broker CPU seconds per GB produced (acknowledged).
    BrokerCpuSPerGb,
    /// Records/s acknowledged over the scheduled rate: 1.0 keeps the schedule.
    ScheduleKeptRatio,
    /// Produced MB/s over the lower of the machine limits measured in the run.
    LowerLimitRatio,
    /// Catch-up read MB/s over the produce MB/s of the same run.
    CatchUpToProduceRatio,
    /// HTTP ingest: samples acknowledged per second (as fast as possible).
    SamplesPerS,
    /// HTTP ingest: request p99 in ms at the fixed rate of the latency phase.
    RequestP99MsAtRate,
    /// HTTP ingest: broker CPU seconds per million samples.
    BrokerCpuSPerMSamples,
}

impl Metric {
    /// How the report names the figure.
    pub fn describe(self) -> &'static str {
        match self {
            Metric::ProduceP99Ms => "produce p99 (ms)",
            Metric::BrokerCpuSPerGb => "broker CPU s per GB",
            Metric::ScheduleKeptRatio => "records/s acknowledged of the scheduled rate",
            Metric::LowerLimitRatio => "produced MB/s of the lower machine limit",
            Metric::CatchUpToProduceRatio => "catch-up read MB/s of the produce MB/s",
            Metric::SamplesPerS => "samples/s",
            Metric::RequestP99MsAtRate => "request p99 (ms) at the latency phase's rate",
            Metric::BrokerCpuSPerMSamples => "broker CPU s per million samples",
        }
    }
}

/// One goal: `metric` at most or at least a bound, for runs under
/// `profile` (every profile when absent) and, for HTTP ingest runs, with
/// `ingest_format` (every format when absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    pub metric: Metric,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_format: Option<String>,
    /// Where the goal comes from (an issue), shown beside it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

impl Goal {
    /// Exactly one finite bound; `Err` says what is wrong with it.
    pub fn check(&self) -> Result<(), String> {
        match (self.at_most, self.at_least) {
            (Some(b), None) | (None, Some(b)) if b.is_finite() => Ok(()),
            (Some(_), Some(_)) => Err(format!(
                "goal {:?}: at_most or at_least, not both",
                self.metric
            )),
            (None, None) => Err(format!("goal {:?}: at_most or at_least", self.metric)),
            _ => Err(format!("goal {:?}: the bound is not a number", self.metric)),
        }
    }

    /// Whether the goal holds for a run under `profile` with `format`
    /// (`None` for runs that have no ingest format).
    pub fn applies(&self, profile: &str, format: Option<&str>) -> bool {
        self.profile.as_deref().is_none_or(|p| p == profile)
            && match (&self.ingest_format, format) {
                (None, _) => true,
                (Some(want), Some(got)) => want == got,
                (Some(_), None) => false,
            }
    }

    pub fn met_by(&self, value: f64) -> bool {
        match (self.at_most, self.at_least) {
            (Some(max), _) => value <= max,
            (None, Some(min)) => value >= min,
            (None, None) => false,
        }
    }

    /// "produce p99 (ms) ≤ 2" with the profile and format it holds for.
    pub fn text(&self) -> String {
        let mut t = self.metric.describe().to_string();
        match (self.at_most, self.at_least) {
            (Some(b), _) => {
                let _ = write!(t, " ≤ {}", number(b));
            }
            (None, Some(b)) => {
                let _ = write!(t, " ≥ {}", number(b));
            }
            (None, None) => {}
        }
        let mut scope = Vec::new();
        if let Some(p) = &self.profile {
            scope.push(format!("{p} profile"));
        }
        if let Some(f) = &self.ingest_format {
            scope.push(format!("--ingest-format {f}"));
        }
        if !scope.is_empty() {
            let _ = write!(t, " ({})", scope.join(", "));
        }
        t
    }
}

/// Short numbers as people write them: 2, 0.3, 1000000.
pub fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    NotMet,
    /// The run did not measure the figure (no broker pid, no catch-up, ...).
    NotMeasured,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "not met",
            Verdict::NotMeasured => "not measured",
        }
    }
}

/// A goal against one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judged {
    pub scenario: String,
    pub profile: String,
    pub goal: Goal,
    pub goal_text: String,
    pub measured: Option<f64>,
    pub verdict: Verdict,
}

/// Judges every goal that applies to a run of `scenario` under `profile`
/// (and `format`), reading each figure through `measure`.
pub fn judge(
    goals: &[Goal],
    scenario: &str,
    profile: &str,
    format: Option<&str>,
    measure: impl Fn(Metric) -> Option<f64>,
) -> Vec<Judged> {
    goals
        .iter()
        .filter(|g| g.applies(profile, format))
        .map(|g| {
            let measured = measure(g.metric).filter(|v| v.is_finite());
            let verdict = match measured {
                None => Verdict::NotMeasured,
                Some(v) if g.met_by(v) => Verdict::Met,
                Some(_) => Verdict::NotMet,
            };
            Judged {
                scenario: scenario.to_string(),
                profile: profile.to_string(),
                goal: g.clone(),
                goal_text: g.text(),
                measured,
                verdict,
            }
        })
        .collect()
}

/// The Markdown table of judged goals: goal, measured value, verdict.
pub fn markdown_table(judged: &[Judged]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "| scenario | profile | goal | measured | verdict | source |\n|---|---|---|---:|---|---|"
    );
    for j in judged {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            j.scenario,
            j.profile,
            j.goal_text,
            j.measured.map_or("–".into(), |v| significant(v, 3)),
            match j.verdict {
                Verdict::Met => "**met**",
                Verdict::NotMet => "**not met**",
                Verdict::NotMeasured => "not measured",
            },
            j.goal.source
        );
    }
    o
}

/// `digits` significant digits, without an exponent.
pub fn significant(x: f64, digits: i32) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let magnitude = x.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).max(0) as usize;
    format!("{x:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn goal(metric: Metric, at_most: Option<f64>, at_least: Option<f64>) -> Goal {
        Goal {
            metric,
            at_most,
            at_least,
            profile: None,
            ingest_format: None,
            source: String::new(),
        }
    }

    #[test]
    fn bounds_are_inclusive_and_face_the_right_way() {
        let p99 = goal(Metric::ProduceP99Ms, Some(2.0), None);
        assert!(p99.met_by(2.0) && p99.met_by(1.1) && !p99.met_by(2.01));
        let rate = goal(Metric::SamplesPerS, None, Some(1e6));
        assert!(rate.met_by(1e6) && !rate.met_by(999_999.0));
        assert_eq!(p99.text(), "produce p99 (ms) ≤ 2");
        assert_eq!(rate.text(), "samples/s ≥ 1000000");
    }

    #[test]
    fn a_goal_needs_exactly_one_finite_bound() {
        assert!(goal(Metric::ProduceP99Ms, Some(2.0), None).check().is_ok());
        assert!(goal(Metric::ProduceP99Ms, None, None).check().is_err());
        assert!(goal(Metric::ProduceP99Ms, Some(1.0), Some(2.0))
            .check()
            .is_err());
        assert!(goal(Metric::ProduceP99Ms, Some(f64::NAN), None)
            .check()
            .is_err());
    }

    #[test]
    fn goals_judge_only_the_runs_they_name() {
        let goals = [
            Goal {
                profile: Some("throughput".into()),
                ..goal(Metric::ProduceP99Ms, Some(2.0), None)
            },
            Goal {
                profile: Some("durable".into()),
                ..goal(Metric::ProduceP99Ms, Some(3.0), None)
            },
            Goal {
                ingest_format: Some("raw".into()),
                ..goal(Metric::SamplesPerS, None, Some(1e6))
            },
            goal(Metric::BrokerCpuSPerGb, Some(2.0), None),
        ];
        let measure = |m| match m {
            Metric::ProduceP99Ms => Some(2.5),
            Metric::SamplesPerS => Some(1.2e6),
            _ => None,
        };
        let t = judge(&goals, "s", "throughput", None, measure);
        assert_eq!(
            t.len(),
            2,
            "the durable and the raw-format goals are left out"
        );
        assert_eq!(t[0].verdict, Verdict::NotMet);
        assert_eq!(t[0].measured, Some(2.5));
        assert_eq!(t[1].verdict, Verdict::NotMeasured);
        let d = judge(&goals, "s", "durable", Some("raw"), measure);
        assert_eq!(
            d.iter().map(|j| j.verdict).collect::<Vec<_>>(),
            [Verdict::Met, Verdict::Met, Verdict::NotMeasured]
        );
        assert!(judge(&goals, "s", "durable", Some("json"), measure)
            .iter()
            .all(|j| j.goal.metric != Metric::SamplesPerS));
        let md = markdown_table(&d);
        assert!(
            md.contains(
                "| s | durable | produce p99 (ms) ≤ 3 (durable profile) | 2.50 | **met** |"
            ),
            "{md}"
        );
    }

    #[test]
    fn goals_parse_from_toml_and_refuse_typos() {
        #[derive(Deserialize)]
        struct Doc {
            goals: Vec<Goal>,
        }
        let doc: Doc = toml::from_str(
            "[[goals]]\nmetric = \"broker_cpu_s_per_gb\"\nat_most = 2.0\nprofile = \"throughput\"\n",
        )
        .expect("parses");
        assert_eq!(doc.goals[0].metric, Metric::BrokerCpuSPerGb);
        assert_eq!(doc.goals[0].profile.as_deref(), Some("throughput"));
        assert!(toml::from_str::<Doc>("[[goals]]\nmetric = \"p99\"\nat_most = 2.0\n").is_err());
        assert!(
            toml::from_str::<Doc>("[[goals]]\nmetric = \"produce_p99_ms\"\natmost = 2.0\n")
                .is_err()
        );
    }

    #[test]
    fn numbers_print_short() {
        assert_eq!(number(2.0), "2");
        assert_eq!(number(0.3), "0.3");
        assert_eq!(significant(2.4567, 3), "2.46");
        assert_eq!(significant(1_234_567.0, 3), "1234567");
        assert_eq!(significant(0.01234, 3), "0.0123");
    }
}
