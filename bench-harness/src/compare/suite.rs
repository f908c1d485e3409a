//! `sluice-bench compare --scenarios a,b,c`: several scenarios, each under
//! every profile asked for, written up as one report: a Markdown file
//! that opens with every goal judged (goal, measured value, verdict) and
//! then has a section per scenario, one SVG overlaying every run's latency
//! curve, and one JSON holding the verdicts and every run's figures.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{BenchError, Result};
use crate::goals::{self, Judged, Verdict};
use crate::http_load::report::{markdown_table as http_table, HttpReport};
use crate::plot::{self, RateSeries, Series, COLORS};
use crate::report::Report;

/// One scenario's runs, one per profile.
#[derive(Debug, Clone)]
pub enum Runs {
    /// Kafka-protocol runs, and the fixed-rate reruns of `--half-peak`.
    Kafka {
        reports: Vec<Report>,
        halves: Vec<Report>,
    },
    Http(Vec<HttpReport>),
}

#[derive(Debug, Clone)]
pub struct ScenarioRuns {
    pub name: String,
    pub description: String,
    pub runs: Runs,
}

impl ScenarioRuns {
    /// The scenario's goals against each of its runs.
    pub fn judge(&self) -> Vec<Judged> {
        match &self.runs {
            Runs::Kafka { reports, .. } => super::judge(reports),
            Runs::Http(reports) => reports
                .iter()
                .flat_map(|r| {
                    goals::judge(
                        &r.scenario.goals,
                        &r.scenario.name,
                        &r.scenario.profile,
                        r.scenario.ingest_format(),
                        |m| r.measure(m),
                    )
                })
                .collect(),
        }
    }
}

/// "N of M goals met" with the ones not measured said apart.
pub fn tally(judged: &[Judged]) -> String {
    let count = |v| judged.iter().filter(|j| j.verdict == v).count();
    let unmeasured = count(Verdict::NotMeasured);
    format!(
        "{} of {} goals met{}.",
        count(Verdict::Met),
        judged.len(),
        if unmeasured > 0 {
            format!(", {unmeasured} not measured")
        } else {
            String::new()
        }
    )
}

pub fn markdown(suite: &[ScenarioRuns], svg_name: &str, date: &str, machine: &str) -> String {
    let mut o = String::new();
    let names: Vec<&str> = suite.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(o, "# Sluice benchmarks: {}\n", names.join(", "));
    let _ = writeln!(
        o,
        "Recorded {date} on {machine}; harness and broker share the machine, and each run measures the machine's limits (raw O_DIRECT write, fdatasync, loopback TCP) beside its own figures.\n"
    );
    let judged: Vec<Judged> = suite.iter().flat_map(ScenarioRuns::judge).collect();
    let _ = writeln!(o, "## Goals\n");
    if judged.is_empty() {
        let _ = writeln!(o, "No scenario here carries goals for the profiles run.");
    } else {
        let _ = writeln!(o, "{}\n{}", goals::markdown_table(&judged), tally(&judged));
    }
    let _ = writeln!(
        o,
        "\n![latency percentiles and throughput of every run]({svg_name})"
    );
    for sc in suite {
        let _ = writeln!(o, "\n## Scenario `{}`\n\n{}\n", sc.name, sc.description);
        match &sc.runs {
            Runs::Kafka { reports, halves } => {
                super::runs_tables(&mut o, reports);
                if !halves.is_empty() {
                    let _ = writeln!(o, "\nAt half of each profile's peak (fixed rate):\n");
                    super::runs_tables(&mut o, halves);
                }
            }
            Runs::Http(reports) => {
                if let Some(h) = reports.first().and_then(|r| r.scenario.http.as_ref()) {
                    let r = &reports[0];
                    let _ = writeln!(
                        o,
                        "Load: {} writers ({} keep-alive connections, one request in flight each), {} series, {} series x {} samples per request, {:.0} B bodies on average, to topic `{}` ({} partitions), broker `--cores {}`; {} s measured after {} s of warm-up per phase. The fixed-rate phase's latencies are from each request's intended send time (corrected for coordinated omission).\n",
                        h.protocol, h.writers, h.series, h.series_per_request, h.samples_per_series,
                        r.body_bytes_mean, r.topic, r.scenario.partitions, r.scenario.broker_cores,
                        r.scenario.duration_s, r.scenario.warmup_s
                    );
                }
                o.push_str(&http_table(reports));
                for r in reports {
                    let _ = writeln!(
                        o,
                        "\n{}: {} records acknowledged, {} in the topic at the end.",
                        r.scenario.profile,
                        r.records_acknowledged,
                        r.records_stored
                            .map_or("unknown".to_string(), |n| n.to_string())
                    );
                }
            }
        }
    }
    o
}

/// Every run's latency curve (Kafka produce acknowledgements solid, HTTP
/// requests dashed) and throughput over time, in one figure.
pub fn svg(suite: &[ScenarioRuns], title: &str) -> String {
    let mut series = Vec::new();
    let mut rates = Vec::new();
    let mut i = 0;
    for sc in suite {
        let mut add = |name: String, hist, points, dashed| {
            let color = COLORS[i % COLORS.len()];
            i += 1;
            series.push(Series {
                name: name.clone(),
                histogram: hist,
                dashed,
                color,
            });
            rates.push(RateSeries {
                name,
                points,
                color,
            });
        };
        match &sc.runs {
            Runs::Kafka { reports, .. } => {
                for r in reports {
                    let name = format!("{} {}", sc.name, r.scenario.profile);
                    add(name, &r.produce_hist, &r.timeline[..], false);
                }
            }
            Runs::Http(reports) => {
                for r in reports {
                    for p in &r.phases {
                        let phase = if p.rate_samples_per_s > 0.0 {
                            "at rate"
                        } else {
                            "peak"
                        };
                        let name = format!("{} {} {phase}", sc.name, r.scenario.profile);
                        add(name, &p.latency_hist, &p.timeline[..], true);
                    }
                }
            }
        }
    }
    let warmup_s = suite
        .iter()
        .find_map(|sc| match &sc.runs {
            Runs::Kafka { reports, .. } => reports.first().map(|r| r.scenario.warmup_s),
            Runs::Http(reports) => reports.first().map(|r| r.scenario.warmup_s),
        })
        .unwrap_or(0.0);
    plot::svg(title, &series, &rates, warmup_s)
}

#[derive(Serialize)]
struct Json<'a> {
    date: &'a str,
    machine: &'a str,
    goals: &'a [Judged],
    scenarios: Vec<JsonScenario<'a>>,
}

#[derive(Serialize)]
struct JsonScenario<'a> {
    name: &'a str,
    kafka_runs: Vec<&'a Report>,
    half_peak_runs: Vec<&'a Report>,
    http_runs: Vec<&'a HttpReport>,
}

/// The file stem: `compare-<scenario>+<scenario>...-<date>`.
pub fn stem(suite: &[ScenarioRuns], date: &str) -> String {
    let names: Vec<&str> = suite.iter().map(|s| s.name.as_str()).collect();
    format!("compare-{}-{date}", names.join("+"))
}

/// Writes `<stem>.{md,svg,json}` into `dir`; returns the Markdown path.
pub fn write(suite: &[ScenarioRuns], dir: &Path, date: &str, machine: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    let stem = stem(suite, date);
    let svg_name = format!("{stem}.svg");
    let md_path = dir.join(format!("{stem}.md"));
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
    };
    let names: Vec<&str> = suite.iter().map(|s| s.name.as_str()).collect();
    write(
        dir.join(&svg_name),
        svg(
            suite,
            &format!("latency by scenario and profile: {}", names.join(", ")),
        ),
    )?;
    write(md_path.clone(), markdown(suite, &svg_name, date, machine))?;
    let judged: Vec<Judged> = suite.iter().flat_map(ScenarioRuns::judge).collect();
    let json = Json {
        date,
        machine,
        goals: &judged,
        scenarios: suite
            .iter()
            .map(|sc| match &sc.runs {
                Runs::Kafka { reports, halves } => JsonScenario {
                    name: &sc.name,
                    kafka_runs: reports.iter().collect(),
                    half_peak_runs: halves.iter().collect(),
                    http_runs: Vec::new(),
                },
                Runs::Http(reports) => JsonScenario {
                    name: &sc.name,
                    kafka_runs: Vec::new(),
                    half_peak_runs: Vec::new(),
                    http_runs: reports.iter().collect(),
                },
            })
            .collect(),
    };
    let text = serde_json::to_string_pretty(&json).map_err(BenchError::codec)?;
    write(dir.join(format!("{stem}.json")), text + "\n")?;
    Ok(md_path)
}
