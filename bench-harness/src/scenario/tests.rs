//! Tests of scenario parsing, overrides and validation.

use super::*;

#[test]
fn every_builtin_scenario_parses_and_validates() {
    for (name, text) in BUILTIN {
        let s = Scenario::parse(text, Path::new(name)).expect(name);
        assert_eq!(s.name, name);
        let mut s1 = s.clone();
        s1.cores = 1;
        s1.validate().expect(name);
    }
}

#[test]
fn small_batches_is_the_issue_command_with_its_goals() {
    // `sluice-bench --partitions 4 --producers 2 --record-bytes 1024
    // --acks -1 --batch-bytes 16384 --linger-ms 1 --rate 100000
    // --consumers 1 --catch-up false --duration 15 --warmup 3`
    let mut by_flags = Scenario::load("default").expect("default");
    by_flags.apply(&Overrides {
        partitions: Some(4),
        producers: Some(2),
        record_bytes: Some(1024),
        acks: Some(-1),
        batch_bytes: Some(16384),
        linger_ms: Some(1.0),
        rate: Some(100_000.0),
        consumers: Some(1),
        catch_up: Some(false),
        duration: Some(15.0),
        warmup: Some(3.0),
        ..Overrides::default()
    });
    let built_in = Scenario::load("small-batches").expect("small-batches");
    let same_load = Scenario {
        name: built_in.name.clone(),
        description: built_in.description.clone(),
        profile: built_in.profile.clone(),
        goals: built_in.goals.clone(),
        ..by_flags
    };
    assert_eq!(same_load, built_in);
    let scoped: Vec<_> = built_in
        .goals
        .iter()
        .map(|g| (g.metric, g.profile.as_deref().unwrap_or("")))
        .collect();
    use crate::goals::Metric::*;
    assert_eq!(
        scoped,
        [
            (ProduceP99Ms, "throughput"),
            (BrokerCpuSPerGb, "throughput"),
            (ScheduleKeptRatio, "durable"),
            (ProduceP99Ms, "durable"),
        ]
    );
    assert!(Scenario::load("goals").expect("goals").goals.len() == 1);
    assert!(Scenario::load("metrics-ingest").expect("m").goals.len() == 1);
}

#[test]
fn http_scenarios_take_their_flags_and_refuse_nonsense() {
    let mut s = Scenario::load("remote-write").expect("remote-write");
    assert_eq!(s.ingest_format(), Some("raw"));
    let o = Overrides {
        ingest_format: Some("json".into()),
        writers: Some(8),
        series_per_request: Some(500),
        ..Overrides::default()
    };
    assert_eq!(
        o.http_flags(),
        ["--ingest-format", "--writers", "--series-per-request"]
    );
    s.apply(&o);
    let h = s.http.clone().expect("http");
    assert_eq!((h.ingest_format.as_str(), h.writers), ("json", 8));
    assert_eq!(h.samples_per_request(), 500);
    s.validate().expect("valid");
    let key = |h: HttpLoad| match (Scenario {
        http: Some(h),
        ..Scenario::default()
    })
    .validate()
    {
        Err(BenchError::Config { key, .. }) => key,
        other => panic!("expected a config error, got {other:?}"),
    };
    let ok = HttpLoad::default();
    assert_eq!(
        key(HttpLoad {
            protocol: "graphite".into(),
            ..ok.clone()
        }),
        "http.protocol"
    );
    assert_eq!(
        key(HttpLoad {
            ingest_format: "avro".into(),
            ..ok.clone()
        }),
        "ingest-format"
    );
    assert_eq!(
        key(HttpLoad {
            series: 10,
            series_per_request: 11,
            ..ok.clone()
        }),
        "series-per-request"
    );
    assert_eq!(
        key(HttpLoad {
            writers: 0,
            ..ok.clone()
        }),
        "writers"
    );
    // No producers is fine for an HTTP load; a goal with two bounds is not.
    Scenario {
        producers: 0,
        consumers: 0,
        http: Some(ok.clone()),
        ..Scenario::default()
    }
    .validate()
    .expect("an HTTP load has no producers");
    let bad_goal = Scenario::parse(
        "[[goals]]\nmetric = \"produce_p99_ms\"\nat_most = 1.0\nat_least = 0.5\n",
        Path::new("x"),
    )
    .expect("parses");
    assert!(bad_goal.validate().is_err());
    let http = Scenario::parse(
        "[http]\nprotocol = \"influx\"\nwritres = 3\n",
        Path::new("x"),
    );
    assert!(http.is_err(), "typos in [http] are refused");
}

#[test]
fn flags_override_only_what_they_name() {
    let mut s = Scenario::load("default").expect("default");
    let before = s.clone();
    s.apply(&Overrides {
        rate: Some(5000.0),
        acks: Some(-1),
        compression: Some("zstd".into()),
        ..Overrides::default()
    });
    assert_eq!(s.rate, 5000.0);
    assert_eq!(s.acks, -1);
    assert_eq!(s.compression, "zstd");
    assert_eq!(s.partitions, before.partitions);
    assert_eq!(s.record_bytes, before.record_bytes);
}

#[test]
fn nonsense_is_refused_with_the_key() {
    let s = Scenario {
        acks: 2,
        ..Scenario::default()
    };
    match s.validate() {
        Err(BenchError::Config { key, .. }) => assert_eq!(key, "acks"),
        other => panic!("expected a config error, got {other:?}"),
    }
    let s = Scenario {
        compression: "brotli".into(),
        ..Scenario::default()
    };
    assert!(s.validate().is_err());
    let err = Scenario::parse("partitons = 3", Path::new("x.toml")).expect_err("typo");
    assert!(err.to_string().contains("partitons"), "{err}");
    assert!(Scenario::load("no-such-scenario").is_err());
}

#[test]
fn the_replicated_pair_differs_only_in_acks() {
    let one = Scenario::load("replicated-acks1").expect("acks1");
    let all = Scenario::load("replicated-acksall").expect("acksall");
    assert_eq!((one.acks, all.acks), (1, -1));
    assert_eq!(
        (one.acks_name(), all.acks_name()),
        ("1".into(), "all".into())
    );
    assert_eq!(one.cluster_nodes, 3);
    assert_eq!(one.replication_factor, 3);
    assert!(one.is_cluster());
    assert_eq!(one.broker_cores, 1, "one core per node on a 2-core machine");
    let same = Scenario {
        name: one.name.clone(),
        description: one.description.clone(),
        acks: one.acks,
        ..all
    };
    assert_eq!(same, one);
}

#[test]
fn cluster_flag_sets_the_replication_factor_unless_given() {
    let mut s = Scenario::load("default").expect("default");
    assert_eq!((s.cluster_nodes, s.replication_factor), (1, 1));
    assert!(!s.is_cluster());
    s.apply(&Overrides {
        cluster: Some(3),
        ..Overrides::default()
    });
    assert_eq!((s.cluster_nodes, s.replication_factor), (3, 3));
    s.validate().expect("3 nodes, RF 3");

    let mut s = Scenario::load("default").expect("default");
    s.apply(&Overrides {
        cluster: Some(3),
        replication_factor: Some(2),
        ..Overrides::default()
    });
    assert_eq!((s.cluster_nodes, s.replication_factor), (3, 2));

    // Back to one node: the replication factor follows.
    let mut s = Scenario::load("replicated-acksall").expect("acksall");
    s.apply(&Overrides {
        cluster: Some(1),
        ..Overrides::default()
    });
    assert_eq!((s.cluster_nodes, s.replication_factor), (1, 1));
    s.validate().expect("single node");
}

#[test]
fn cluster_sizes_and_replication_factors_are_checked() {
    let key = |s: Scenario| match s.validate() {
        Err(BenchError::Config { key, .. }) => key,
        other => panic!("expected a config error, got {other:?}"),
    };
    assert_eq!(
        key(Scenario {
            cluster_nodes: 0,
            ..Scenario::default()
        }),
        "cluster"
    );
    assert_eq!(
        key(Scenario {
            cluster_nodes: CLUSTER_NODES_MAX + 1,
            ..Scenario::default()
        }),
        "cluster"
    );
    assert_eq!(
        key(Scenario {
            cluster_nodes: 3,
            replication_factor: 4,
            ..Scenario::default()
        }),
        "replication-factor"
    );
    let parsed = Scenario::parse("cluster_nodes = 3\nreplication_factor = 3", Path::new("x"))
        .expect("parses");
    assert_eq!((parsed.cluster_nodes, parsed.replication_factor), (3, 3));
    // A single node keeps accepting any replication factor: the
    // broker (or an external cluster) answers for it.
    Scenario {
        replication_factor: 3,
        ..Scenario::default()
    }
    .validate()
    .expect("external clusters choose their own");
}

#[test]
fn profiles_files_name_their_profile() {
    for name in PROFILES {
        let path = format!(
            "{}/../perf/profiles/{name}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).expect("profile file");
        let table: toml::Table = text.parse().expect("toml");
        assert_eq!(
            table.get("profile").and_then(|v| v.as_str()),
            Some(name),
            "{path}"
        );
    }
}
