//! `sluice-bench compare`: the same scenario against the embedded broker
//! under each durability profile, written up as a Markdown report with a
//! table and one SVG overlaying the profiles' latency curves; with
//! `--scenarios`, several scenarios into one report (`suite`).

pub mod suite;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{BenchError, Result};
use crate::goals::{self, Judged};
use crate::plot::{self, RateSeries, Series, COLORS};
use crate::report::Report;

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The Markdown report for `reports` (one per profile, in order) and the
/// optional fixed-rate reruns at half of each profile's peak.
pub fn markdown(
    reports: &[Report],
    halves: &[Report],
    svg_names: (&str, &str),
    date: &str,
    machine: &str,
) -> String {
    let mut o = String::new();
    let Some(first) = reports.first() else {
        return "no runs\n".into();
    };
    let s = &first.scenario;
    let _ = writeln!(o, "# Sluice fsync profiles: scenario `{}`\n", s.name);
    let _ = writeln!(o, "Recorded {date} on {machine}.\n");
    runs_tables(&mut o, reports);
    let _ = writeln!(
        o,
        "\nLatencies are per record{}. Throughput counts acknowledged record values; catch-up counts whole record batches read from offset 0.\n\n![latency percentiles and throughput]({})",
        if s.rate > 0.0 {
            ", measured from each record's intended send time (corrected for coordinated omission)"
        } else {
            ", from record creation (once a request slot is free) to acknowledgement"
        },
        svg_names.0
    );
    issue_5_goals(&mut o, reports, halves);
    let judged = judge(reports);
    if !judged.is_empty() {
        let _ = writeln!(
            o,
            "\n## The scenario's goals\n\n{}",
            goals::markdown_table(&judged)
        );
    }
    if !halves.is_empty() {
        let _ = writeln!(
            o,
            "\n## At half of each profile's peak\n\nThe same workload at a fixed rate of half the records/s each profile reached above; latencies from each record's intended send time (corrected for coordinated omission).\n"
        );
        let _ = writeln!(
            o,
            "| profile | target records/s | produced MB/s | produce p50 ms | p99 ms | p99.9 ms | p99.99 ms | max ms | broker cores |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in halves {
            let p = &r.produce_latency;
            let _ = writeln!(
                o,
                "| {} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {} |",
                r.scenario.profile,
                r.scenario.rate,
                r.produced.mb_per_s,
                ms(p.p50_us),
                ms(p.p99_us),
                ms(p.p999_us),
                ms(p.p9999_us),
                ms(p.max_us),
                r.broker
                    .as_ref()
                    .map_or("–".into(), |b| format!("{:.2}", b.cores))
            );
        }
        let _ = writeln!(o, "\n![latency at half peak]({})", svg_names.1);
    }
    o
}

/// The workload line, the table of runs (one row per profile) and the
/// machine limits measured in each.
pub fn runs_tables(o: &mut String, reports: &[Report]) {
    let Some(first) = reports.first() else {
        return;
    };
    let s = &first.scenario;
    let rate = if s.rate > 0.0 {
        format!("{:.0} records/s", s.rate)
    } else {
        "as fast as possible".into()
    };
    let _ = writeln!(
        o,
        "Workload: {} producers over {} partitions, {} B records, acks={}, {} B batches, linger {} ms, compression {}, {}, {} tailing consumers; {} s measured after {} s of warm-up; harness and broker on the same machine.\n",
        s.producers, s.partitions, s.record_bytes, s.acks, s.batch_bytes, s.linger_ms, s.compression, rate, s.consumers, s.duration_s, s.warmup_s
    );
    let _ = writeln!(
        o,
        "| profile | produced MB/s | records/s | of lower limit | produce p50 ms | p99 ms | p99.9 ms | e2e p99 ms | broker CPU s/GB | broker peak RSS MiB | catch-up MB/s | errors |"
    );
    let _ = writeln!(
        o,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in reports {
        let b = r.broker.as_ref();
        let _ = writeln!(
            o,
            "| {} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario.profile,
            r.produced.mb_per_s,
            r.produced.records_per_s,
            r.produced
                .fraction_of_lower_limit
                .map_or("–".into(), |f| format!("{f:.2}")),
            ms(r.produce_latency.p50_us),
            ms(r.produce_latency.p99_us),
            ms(r.produce_latency.p999_us),
            if r.e2e_latency.count > 0 {
                ms(r.e2e_latency.p99_us)
            } else {
                "–".into()
            },
            b.and_then(|b| b.cpu_s_per_gb)
                .map_or("–".into(), |x| format!("{x:.2}")),
            b.map_or("–".into(), |b| format!(
                "{:.1}",
                b.rss_peak_kib as f64 / 1024.0
            )),
            r.catch_up
                .as_ref()
                .map_or("–".into(), |c| format!("{:.0}", c.mb_per_s)),
            r.errors
        );
    }
    let _ = writeln!(
        o,
        "\nMachine limits measured in each run (same file system as the broker's data):\n"
    );
    let _ = writeln!(o, "| profile | O_DIRECT write MB/s | fdatasync p50 µs | fdatasync p99 µs | loopback TCP MB/s |");
    let _ = writeln!(o, "|---|---:|---:|---:|---:|");
    for r in reports {
        if let Some(l) = &r.limits {
            let _ = writeln!(
                o,
                "| {} | {:.0} | {} | {} | {:.0} |",
                r.scenario.profile,
                l.disk_write_mb_per_s,
                l.fdatasync_us_p50,
                l.fdatasync_us_p99,
                l.loopback_mb_per_s
            );
        }
    }
}

/// The scenario's own goals (`[[goals]]`) against each profile's run.
pub fn judge(reports: &[Report]) -> Vec<Judged> {
    reports
        .iter()
        .flat_map(|r| {
            goals::judge(
                &r.scenario.goals,
                &r.scenario.name,
                &r.scenario.profile,
                None,
                |m| r.measure(m),
            )
        })
        .collect()
}

fn find<'a>(reports: &'a [Report], profile: &str) -> Option<&'a Report> {
    reports.iter().find(|r| r.scenario.profile == profile)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "not met"
    }
}

/// Issue #22's idle footprint (issue #5 allowed 32 MiB). The harness reads
/// it once the topic exists, before any load.
const IDLE_RSS_KIB_MAX: u64 = 16 << 10;

/// Issue #5's goals, checked against what this comparison measured.
fn issue_5_goals(o: &mut String, reports: &[Report], halves: &[Report]) {
    let mut rows = Vec::new();
    if let Some(r) = find(reports, "throughput") {
        if let Some(f) = r.produced.fraction_of_lower_limit {
            rows.push(format!(
                "| throughput profile ≥ 0.7 of the lower machine limit | {f:.2} ({:.0} MB/s) | {} |",
                r.produced.mb_per_s,
                verdict(f >= 0.7)
            ));
        }
    }
    if let Some(r) = find(reports, "durable") {
        rows.push(format!(
            "| durable profile ≥ 1 GB/s | {:.2} GB/s | {} |",
            r.produced.mb_per_s / 1000.0,
            verdict(r.produced.mb_per_s >= 1000.0)
        ));
    }
    if let Some(r) = find(halves, "durable") {
        let p99 = r.produce_latency.p99_us;
        rows.push(format!(
            "| durable p99 produce latency ≤ 2 ms at half its peak | {} ms at {:.0} records/s | {} |",
            ms(p99),
            r.scenario.rate,
            verdict(p99 <= 2000)
        ));
    }
    let idle = reports
        .iter()
        .filter_map(|r| r.broker.map(|b| b.rss_idle_kib))
        .max();
    if let Some(kib) = idle {
        rows.push(format!(
            "| idle broker RSS ≤ {} MiB | {:.1} MiB (largest of the runs) | {} |",
            IDLE_RSS_KIB_MAX >> 10,
            kib as f64 / 1024.0,
            verdict(kib <= IDLE_RSS_KIB_MAX)
        ));
    }
    let harness = reports
        .iter()
        .filter_map(|r| r.harness.cores_per_gb_per_s)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    if let Some(h) = harness {
        rows.push(format!(
            "| harness ≤ 0.3 core per GB/s | {h:.2} (worst of the as-fast-as-possible runs) | {} |",
            verdict(h <= 0.3)
        ));
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\n## Against the goals of issue #5\n\nOne node, client and broker sharing this machine; the limits above drift between runs on shared machines, so ratios are what to compare.\n\n| goal | measured | |\n|---|---|---|"
    );
    for r in rows {
        let _ = writeln!(o, "{r}");
    }
}

/// The overlay plot: each profile's produce (solid) and end-to-end
/// (dashed) curves, and its throughput over time.
pub fn overlay_svg(reports: &[Report], title: &str) -> String {
    let mut series = Vec::new();
    let mut rates = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        series.push(Series {
            name: format!("{} produce", r.scenario.profile),
            histogram: &r.produce_hist,
            dashed: false,
            color,
        });
        if !r.e2e_hist.is_empty() {
            series.push(Series {
                name: format!("{} e2e", r.scenario.profile),
                histogram: &r.e2e_hist,
                dashed: true,
                color,
            });
        }
        rates.push(RateSeries {
            name: r.scenario.profile.clone(),
            points: &r.timeline,
            color,
        });
    }
    let warmup_s = reports.first().map_or(0.0, |r| r.scenario.warmup_s);
    plot::svg(title, &series, &rates, warmup_s)
}

/// Writes `compare-<scenario>-<date>.{md,svg,json}` into `dir`; returns
/// the Markdown path.
pub fn write(
    reports: &[Report],
    halves: &[Report],
    dir: &Path,
    date: &str,
    machine: &str,
) -> Result<PathBuf> {
    let name = reports
        .first()
        .map_or("none".to_string(), |r| r.scenario.name.clone());
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::io(format!("creating {}", dir.display()), e))?;
    let stem = format!("compare-{name}-{date}");
    let svg_name = format!("{stem}.svg");
    let md_path = dir.join(format!("{stem}.md"));
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text)
            .map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
    };
    write(
        dir.join(&svg_name),
        overlay_svg(
            reports,
            &format!("scenario {name}: latency by fsync profile"),
        ),
    )?;
    let half_svg_name = format!("{stem}-half-peak.svg");
    if !halves.is_empty() {
        write(
            dir.join(&half_svg_name),
            overlay_svg(
                halves,
                &format!("scenario {name} at half of each profile's peak rate"),
            ),
        )?;
    }
    write(
        md_path.clone(),
        markdown(reports, halves, (&svg_name, &half_svg_name), date, machine),
    )?;
    let all: Vec<&Report> = reports.iter().chain(halves).collect();
    let json = serde_json::to_string_pretty(&all).map_err(BenchError::codec)?;
    write(dir.join(format!("{stem}.json")), json + "\n")?;
    Ok(md_path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_load::report::{BrokerCpu, HttpReport, PhaseReport};
    use crate::report::{Flow, HarnessUsage, Target};
    use crate::scenario::Scenario;
    use crate::stats::{latency_histogram, record_us, Percentiles, RatePoint};
    use std::time::Duration;

    fn report(profile: &str, p99_us: u64) -> Report {
        let mut h = latency_histogram();
        record_us(&mut h, Duration::from_micros(p99_us), 100);
        Report {
            tool: "sluice-bench".into(),
            version: "0".into(),
            started_unix_s: 0,
            target: Target::default(),
            scenario: Scenario {
                name: "default".into(),
                profile: profile.into(),
                ..Scenario::default()
            },
            settings: Default::default(),
            limits: None,
            measured_s: 10.0,
            produced: Flow::new(1000, 1_000_000, 10.0, Some(1.0)),
            consumed: Flow::default(),
            produce_latency: Percentiles::of(&h),
            e2e_latency: Percentiles::default(),
            corrected_for_coordinated_omission: false,
            broker: None,
            cluster: None,
            harness: HarnessUsage::default(),
            machine: None,
            catch_up: None,
            produce_requests: 1,
            records_per_request: None,
            errors: 0,
            error_samples: vec![],
            timeline: vec![RatePoint::default()],
            measured_from_unix_s: 0.0,
            interval_s: 1.0,
            produce_hist: h,
            e2e_hist: latency_histogram(),
            produce_intervals: vec![],
            e2e_intervals: vec![],
        }
    }

    #[test]
    fn the_report_has_a_row_per_profile_and_writes_its_files() {
        let reports = [report("durable", 2000), report("throughput", 300)];
        let md = markdown(
            &reports,
            &[],
            ("x.svg", "y.svg"),
            "2026-01-01",
            "test machine",
        );
        assert!(md.contains("| durable | 0.1 | 100 | 0.10 | 2.00 |"), "{md}");
        assert!(md.contains("| throughput |"));
        assert!(md.contains("![latency percentiles and throughput](x.svg)"));
        assert!(
            md.contains("| durable profile ≥ 1 GB/s | 0.00 GB/s | not met |"),
            "{md}"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let half = [report("durable", 900)];
        let path = write(&reports, &half, dir.path(), "2026-01-01", "m").expect("write");
        let md = std::fs::read_to_string(&path).expect("md");
        assert!(md.contains("## At half of each profile's peak"));
        assert!(dir
            .path()
            .join("compare-default-2026-01-01-half-peak.svg")
            .is_file());
        assert!(path.ends_with("compare-default-2026-01-01.md"));
        let svg = std::fs::read_to_string(dir.path().join("compare-default-2026-01-01.svg"))
            .expect("svg");
        assert!(svg.contains("durable produce") && svg.contains("throughput produce"));
        assert!(dir.path().join("compare-default-2026-01-01.json").is_file());
    }

    fn http_report(format: &str, peak_samples_per_s: f64, p99_us: u64) -> HttpReport {
        let mut scenario = Scenario::load("remote-write").expect("remote-write");
        scenario.apply(&crate::scenario::Overrides {
            ingest_format: Some(format.into()),
            ..Default::default()
        });
        let phase = |rate: f64, samples_per_s: f64, p99_us: u64| {
            let mut h = latency_histogram();
            record_us(&mut h, Duration::from_micros(p99_us), 100);
            PhaseReport {
                rate_samples_per_s: rate,
                measured_s: 10.0,
                requests: 10,
                samples: 20_000,
                samples_per_s,
                records_per_s: samples_per_s,
                requests_per_s: 1.0,
                body_mb_per_s: 1.0,
                request_latency: Percentiles::of(&h),
                corrected_for_coordinated_omission: rate > 0.0,
                broker: Some(BrokerCpu {
                    cpu_s: 1.0,
                    cores: 0.1,
                    cpu_s_per_m_samples: Some(0.5),
                    rss_kib: 1024,
                }),
                harness_cores: 0.1,
                errors: 0,
                statuses: Default::default(),
                error_samples: vec![],
                timeline: vec![RatePoint::default()],
                latency_hist: h,
            }
        };
        HttpReport {
            tool: "sluice-bench".into(),
            version: "0".into(),
            started_unix_s: 0,
            target: Target::default(),
            ingest_addr: "127.0.0.1:1".into(),
            scenario,
            limits: None,
            topic: "prometheus".into(),
            body_bytes_mean: 1000.0,
            samples_per_request: 2000,
            phases: vec![
                phase(0.0, peak_samples_per_s, 50_000),
                phase(500_000.0, 500_000.0, p99_us),
            ],
            records_acknowledged: 40_000,
            records_stored: Some(40_000),
            broker_rss_idle_kib: None,
        }
    }

    #[test]
    fn a_suite_judges_every_scenario_s_goals_in_one_report() {
        let mut small = Scenario::load("small-batches").expect("small-batches");
        small.profile = "throughput".into();
        let mut fast = report("throughput", 1500);
        fast.scenario = small.clone();
        fast.broker = Some(crate::report::BrokerUsage {
            cpu_s_per_gb: Some(2.5),
            ..Default::default()
        });
        let mut durable = report("durable", 2500);
        durable.scenario = Scenario {
            profile: "durable".into(),
            ..small
        };
        durable.produced = Flow::new(990_000, 1, 10.0, None);
        let suite_runs = [
            suite::ScenarioRuns {
                name: "small-batches".into(),
                description: "d".into(),
                runs: suite::Runs::Kafka {
                    reports: vec![fast, durable],
                    halves: vec![],
                },
            },
            suite::ScenarioRuns {
                name: "remote-write".into(),
                description: "rw".into(),
                runs: suite::Runs::Http(vec![
                    http_report("raw", 1.2e6, 12_000),
                    http_report("json", 0.2e6, 4_000),
                ]),
            },
        ];
        let judged: Vec<_> = suite_runs.iter().flat_map(|s| s.judge()).collect();
        let verdicts: Vec<_> = judged
            .iter()
            .map(|j| (j.profile.as_str(), j.goal.metric, j.verdict))
            .collect();
        use crate::goals::{Metric::*, Verdict::*};
        assert_eq!(
            verdicts,
            [
                ("throughput", ProduceP99Ms, Met),
                ("throughput", BrokerCpuSPerGb, NotMet),
                ("durable", ScheduleKeptRatio, Met),
                ("durable", ProduceP99Ms, Met),
                ("balanced", SamplesPerS, Met),
                ("balanced", RequestP99MsAtRate, NotMet),
                ("balanced", SamplesPerS, NotMet),
                ("balanced", RequestP99MsAtRate, Met),
            ]
        );
        assert_eq!(suite::tally(&judged), "5 of 8 goals met.");
        let dir = tempfile::tempdir().expect("tempdir");
        let md_path = suite::write(&suite_runs, dir.path(), "2026-01-01", "m").expect("write");
        assert!(md_path.ends_with("compare-small-batches+remote-write-2026-01-01.md"));
        let md = std::fs::read_to_string(&md_path).expect("md");
        assert!(md.contains("## Scenario `remote-write`"), "{md}");
        assert!(
            md.contains("| samples/s ≥ 300000 (balanced profile, --ingest-format json) | 200000 | **not met** |"),
            "{md}"
        );
        assert!(md.contains("| balanced | raw | 500000/s |"), "{md}");
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(md_path.with_extension("json")).expect("json"),
        )
        .expect("valid json");
        assert_eq!(json["goals"].as_array().map(Vec::len), Some(8));
        assert_eq!(json["goals"][1]["verdict"], "not_met");
        assert_eq!(
            json["scenarios"][1]["http_runs"][0]["phases"][0]["samples_per_s"],
            1.2e6
        );
        let svg = std::fs::read_to_string(md_path.with_extension("svg")).expect("svg");
        assert!(svg.contains("remote-write balanced at rate"));
    }
}
