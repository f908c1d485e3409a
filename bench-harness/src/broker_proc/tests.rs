//! Tests of `broker_proc`.

use super::*;

#[test]
fn stat_fields_count_from_the_last_parenthesis() {
    let stat = "1234 (we (ird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 200 300";
    assert_eq!(parse_stat_ticks(stat), Some(300));
}

#[test]
fn machine_busy_time_leaves_out_idle_and_iowait() {
    let stat = "cpu  100 5 50 1000 40 3 2 1 7 0\ncpu0 50 2 25 500 20 1 1 0 0 0\n";
    assert_eq!(
        parse_machine_busy_ticks(stat),
        Some(100 + 5 + 50 + 3 + 2 + 1)
    );
    assert_eq!(parse_machine_busy_ticks("intr 1 2\n"), None);
    assert!(machine_busy_s().is_some_and(|s| s > 0.0));
}

#[test]
fn own_process_is_sampled() {
    let s = sample(std::process::id()).expect("own /proc");
    assert!(s.rss_kib > 0 && s.rss_peak_kib >= s.rss_kib);
    assert_eq!(
        parse_status_kib("Name:\tx\nVmHWM:\t  5120 kB\n", "VmHWM:"),
        Some(5120)
    );
}

#[test]
fn the_peak_can_be_reset_to_the_current_size() {
    let pid = std::process::id();
    let grown: Vec<u8> = vec![1; 32 << 20];
    assert!(grown.iter().all(|&b| b == 1));
    drop(grown);
    let before = sample(pid).expect("own /proc");
    if !reset_peak(pid) {
        return; // an old kernel or a restricted /proc: nothing to check
    }
    let after = sample(pid).expect("own /proc");
    assert!(after.rss_peak_kib <= before.rss_peak_kib);
    assert!(after.rss_peak_kib >= after.rss_kib);
}

#[test]
fn cluster_nodes_know_every_voter_and_their_own_ports() {
    let nodes: Vec<NodePorts> = (1..=3)
        .map(|i| NodePorts {
            node_id: i,
            kafka: 9000 + i as u16,
            controller: 9100 + i as u16,
            link: 9200 + 10 * i as u16,
        })
        .collect();
    assert_eq!(
        controller_voters(&nodes),
        "1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103"
    );
    let args = node_args(&nodes, &nodes[1], Path::new("/d/n2"), "balanced", 1);
    let value = |flag: &str| {
        let i = args.iter().position(|a| a == flag).expect(flag);
        args[i + 1].clone()
    };
    assert_eq!(args[0], "serve");
    assert_eq!(value("--node-id"), "2");
    assert_eq!(value("--listen"), "127.0.0.1:9002");
    assert_eq!(value("--advertise"), "127.0.0.1:9002");
    assert_eq!(value("--controller-listen"), "127.0.0.1:9102");
    assert_eq!(value("--controller-voters"), controller_voters(&nodes));
    assert_eq!(value("--link-listen"), "127.0.0.1:9220");
    assert_eq!(value("--metrics-listen"), "");
    assert_eq!(value("--data-dir"), "/d/n2");
    assert_eq!(value("--cores"), "1");
    assert_eq!(value("--profile"), "balanced");
}

#[test]
fn cluster_ports_are_distinct_with_room_for_every_link() {
    let cores = 3;
    let nodes = cluster_ports(3, cores).expect("ports");
    assert_eq!(nodes.len(), 3);
    assert_eq!(
        nodes.iter().map(|n| n.node_id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let mut all = Vec::new();
    for n in &nodes {
        all.push(n.kafka);
        all.push(n.controller);
        all.extend((0..cores as u16).map(|i| n.link + i));
    }
    let count = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), count, "a port was handed out twice: {nodes:?}");
}

#[test]
fn warnings_and_errors_are_counted_from_the_log() {
    let log = "2026-11-25T10:00:00.000001Z  INFO broker: listening\n\
               2026-11-25T10:00:01.000001Z  WARN broker::replicas: serving a follower failed: x\n\
               2026-11-25T10:00:02.000001Z ERROR broker: boom\n\
               {\"timestamp\":\"t\",\"level\":\"WARN\",\"fields\":{}}\n\
               a line mentioning WARN in its message only\n";
    let (warn, error, kept) = log_problems(log, 2);
    assert_eq!((warn, error), (2, 1));
    assert_eq!(kept.len(), 2);
    assert!(kept[0].contains("serving a follower failed"));
    assert_eq!(log_problems("", 5), (0, 0, vec![]));
}

#[test]
fn pinned_threads_are_grouped_by_name_and_cpus() {
    let t = |n: &str, c: &str| (n.to_string(), c.to_string());
    let threads = [
        t("sluice", "0-1"),
        t("sluice-shard-2", "0"),
        t("sluice-shard-2", "0"),
        t("iou-wrk-8048", "0"),
        t("iou-wrk-8048", "0"),
        t("iou-wrk-8049", "0"),
    ];
    assert_eq!(
        group_pinned(&threads, "0-1"),
        vec![
            "iou-wrk (3 threads): cpu 0",
            "sluice-shard-2 (2 threads): cpu 0"
        ]
    );
    assert!(group_pinned(&threads[..1], "0-1").is_empty());
}

#[test]
fn unpinning_lets_a_pinned_thread_run_anywhere() {
    let cpus = online_cpus();
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("bench-pinned".into())
        .spawn(move || {
            // SAFETY: as in unpin: a set we own, CPU 0 only, this thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            // SAFETY: gettid has no preconditions.
            let _ = tx.send(unsafe { libc::gettid() });
            let _ = done_rx.recv();
        })
        .expect("thread");
    let tid = rx.recv().expect("tid");
    let allowed = || {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
            .expect("status")
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
            .expect("Cpus_allowed_list")
    };
    assert_eq!(allowed(), "0");
    assert!(unpin(std::process::id()).expect("unpin") >= 1);
    let want = if cpus == 1 {
        "0".to_string()
    } else {
        format!("0-{}", cpus - 1)
    };
    assert_eq!(allowed(), want);
    let _ = done_tx.send(());
    thread.join().expect("join");
}

#[test]
fn a_missing_binary_is_a_clear_error() {
    let err = find_sluice(Some(Path::new("/nonexistent/sluice"))).expect_err("missing");
    assert!(err.to_string().contains("--sluice-bin"));
}
