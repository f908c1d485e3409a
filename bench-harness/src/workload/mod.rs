//! The load itself: how producers and consumers are laid out over
//! partitions, leaders and harness shards, and what each shard hands back
//! at the end.

pub mod consumer;
pub mod producer;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::admin::TopicInfo;
use crate::clock::Clock;
use crate::scenario::Scenario;
use crate::stats::{interval_for, Counters, LatencySink};

/// Everything a shard needs to run its part; shared read-only.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub topic: TopicInfo,
    pub clock: Clock,
    /// Load starts.
    pub start: Instant,
    /// Warm-up ends, figures start.
    pub measure_from: Instant,
    /// Producers stop.
    pub stop_at: Instant,
    /// Consumers keep reading this long after `stop_at` for stragglers.
    pub drain: Duration,
    /// Where tailing consumers start, by partition (the log end before load).
    pub tail_from: HashMap<i32, i64>,
    pub counters: Arc<Counters>,
    pub connect_timeout: Duration,
    /// Set on SIGINT/SIGTERM: every task winds down at its next step.
    pub cancel: Arc<AtomicBool>,
}

impl Plan {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// One producer connection: a producer's partitions led by one broker.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerUnit {
    pub producer: u32,
    pub leader_addr: String,
    pub partitions: Vec<i32>,
    /// Records/s for this connection; 0 = as fast as possible.
    pub rate: f64,
}

/// One consumer connection: a consumer's partitions led by one broker.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerUnit {
    pub consumer: u32,
    pub leader_addr: String,
    pub partitions: Vec<i32>,
}

/// Spreads partitions over producers (several producers share a partition
/// when there are more producers than partitions), then splits each
/// producer by leader, giving each connection its share of the rate.
pub fn producer_units(s: &Scenario, topic: &TopicInfo) -> Vec<ProducerUnit> {
    let n = topic.partitions.len();
    let producers = s.producers as usize;
    let mut units = Vec::new();
    for j in 0..producers {
        let mine: Vec<usize> = if producers <= n {
            (0..n).filter(|i| i % producers == j).collect()
        } else {
            vec![j % n]
        };
        let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for &i in &mine {
            let p = &topic.partitions[i];
            by_leader
                .entry(&p.leader_addr)
                .or_default()
                .push(p.partition);
        }
        let producer_rate = s.rate / producers as f64;
        for (leader, partitions) in by_leader {
            let rate = producer_rate * partitions.len() as f64 / mine.len() as f64;
            units.push(ProducerUnit {
                producer: j as u32,
                leader_addr: leader.to_string(),
                partitions,
                rate,
            });
        }
    }
    units
}

/// Every consumer reads every partition (fan-out), one connection per leader.
pub fn consumer_units(s: &Scenario, topic: &TopicInfo) -> Vec<ConsumerUnit> {
    let mut by_leader: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for p in &topic.partitions {
        by_leader
            .entry(&p.leader_addr)
            .or_default()
            .push(p.partition);
    }
    (0..s.consumers)
        .flat_map(|c| {
            by_leader
                .iter()
                .map(move |(leader, partitions)| ConsumerUnit {
                    consumer: c,
                    leader_addr: leader.to_string(),
                    partitions: partitions.clone(),
                })
        })
        .collect()
}

/// What one harness shard measured.
#[derive(Debug)]
pub struct ShardOutput {
    pub produce: LatencySink,
    pub e2e: LatencySink,
    pub produce_requests: u64,
    pub errors: Vec<String>,
}

impl ShardOutput {
    /// Empty, with intervals counted from the end of the warm-up.
    pub fn new(plan: &Plan) -> ShardOutput {
        let interval = interval_for(plan.scenario.duration_s);
        ShardOutput {
            produce: LatencySink::new(plan.measure_from, interval),
            e2e: LatencySink::new(plan.measure_from, interval),
            produce_requests: 0,
            errors: Vec::new(),
        }
    }
}

/// Errors worth printing are few; the count says the rest.
pub const ERRORS_KEPT_MAX: usize = 8;

impl ShardOutput {
    pub fn note_error(&mut self, message: String) {
        if self.errors.len() < ERRORS_KEPT_MAX && !self.errors.contains(&message) {
            self.errors.push(message);
        }
    }
}

/// Runs shard `shard` of `shards`: its producer and consumer units,
/// each a task, until the plan's end.
pub async fn run_shard(plan: Arc<Plan>, shard: usize, shards: usize) -> ShardOutput {
    let out = std::rc::Rc::new(std::cell::RefCell::new(ShardOutput::new(&plan)));
    let mut tasks = Vec::new();
    let shared = (plan.scenario.producers > 0)
        .then(|| std::rc::Rc::new(producer::Shared::new(&plan.scenario, shard)));
    for (i, unit) in producer_units(&plan.scenario, &plan.topic)
        .into_iter()
        .enumerate()
    {
        if let Some(shared) = shared.as_ref().filter(|_| i % shards == shard) {
            let plan = plan.clone();
            let out = out.clone();
            let shared = shared.clone();
            tasks.push(glommio::spawn_local(async move {
                let result = producer::run(&plan, &unit, &shared, &out).await;
                if let Err(e) = result {
                    plan.counters
                        .errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    out.borrow_mut()
                        .note_error(format!("producer {}: {e}", unit.producer));
                }
            }));
        }
    }
    for (i, unit) in consumer_units(&plan.scenario, &plan.topic)
        .into_iter()
        .enumerate()
    {
        if (i + shards - 1) % shards == shard {
            let plan = plan.clone();
            let out = out.clone();
            tasks.push(glommio::spawn_local(async move {
                if let Err(e) = consumer::run_tailing(&plan, &unit, &out).await {
                    plan.counters
                        .errors
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    out.borrow_mut()
                        .note_error(format!("consumer {}: {e}", unit.consumer));
                }
            }));
        }
    }
    for t in tasks {
        t.await;
    }
    std::rc::Rc::try_unwrap(out)
        .map(|c| c.into_inner())
        .unwrap_or_else(|_| ShardOutput::new(&plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::admin::PartitionInfo;

    fn topic(partitions: i32, leaders: i32) -> TopicInfo {
        TopicInfo {
            name: "t".into(),
            topic_id: uuid::Uuid::nil(),
            partitions: (0..partitions)
                .map(|p| PartitionInfo {
                    partition: p,
                    leader_id: p % leaders,
                    leader_addr: format!("b{}:9092", p % leaders),
                    replicas: vec![p % leaders],
                    isr: vec![p % leaders],
                })
                .collect(),
        }
    }

    #[test]
    fn producers_cover_every_partition_and_share_the_rate() {
        let s = Scenario {
            producers: 3,
            rate: 9000.0,
            ..Scenario::default()
        };
        let units = producer_units(&s, &topic(8, 2));
        let mut covered: Vec<i32> = units.iter().flat_map(|u| u.partitions.clone()).collect();
        covered.sort_unstable();
        assert_eq!(covered, (0..8).collect::<Vec<_>>());
        let total: f64 = units.iter().map(|u| u.rate).sum();
        assert!((total - 9000.0).abs() < 1e-6);
        assert!(units.iter().all(|u| u
            .partitions
            .iter()
            .all(|p| format!("b{}:9092", p % 2) == u.leader_addr)));
    }

    #[test]
    fn more_producers_than_partitions_share_partitions() {
        let s = Scenario {
            producers: 10,
            ..Scenario::default()
        };
        let units = producer_units(&s, &topic(4, 1));
        assert_eq!(units.len(), 10);
        assert!(units.iter().all(|u| u.partitions.len() == 1));
    }

    #[test]
    fn each_consumer_reads_everything() {
        let s = Scenario {
            consumers: 3,
            ..Scenario::default()
        };
        let units = consumer_units(&s, &topic(6, 2));
        assert_eq!(units.len(), 6);
        let per_consumer: usize = units
            .iter()
            .filter(|u| u.consumer == 1)
            .map(|u| u.partitions.len())
            .sum();
        assert_eq!(per_consumer, 6);
    }
}
