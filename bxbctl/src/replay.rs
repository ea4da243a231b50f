//! Resetting a consumer group's offsets: the replay mechanism of the pipeline.
//!
//! The group must be empty (no live member), as Kafka's own `kafka-consumer-groups
//! --reset-offsets` requires: a running consumer would overwrite the new offsets with its own
//! next commit. Stop the consumers (`./dev/stop consumer-postgres`, or scale the Deployment to 0),
//! reset, start them again.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(15);

/// Where to move the offsets to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Earliest,
    Latest,
    /// The first offset whose timestamp is at or after this time (milliseconds since the epoch);
    /// the end of the partition when there is none.
    Timestamp(i64),
    /// Explicit offsets per partition (clamped to what the partition holds).
    Offsets(BTreeMap<i32, i64>),
}

/// One partition's reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    pub partition: i32,
    /// The committed offset now, if the group has one.
    pub committed: Option<i64>,
    /// The offset the group will resume from.
    pub target: i64,
    /// How many records will be read again (0 when moving forward).
    pub reread: i64,
    /// How many records will be skipped (moving forward past unread records).
    pub skipped: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The group still has live members; their commits would undo the reset.
    #[error("consumer group {group} has {members} active member(s) (state {state}); stop its consumers first")]
    GroupActive { group: String, members: usize, state: String },
    /// The topic does not exist or has no such partition.
    #[error("{0}")]
    UnknownPartition(String),
    /// Kafka refused or did not answer.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Computes one partition's plan from its committed offset, its low and high watermarks and
/// the requested target offset (already resolved for the partition).
pub fn plan_partition(partition: i32, committed: Option<i64>, low: i64, high: i64, requested: i64) -> PartitionPlan {
    let target = requested.clamp(low, high);
    // Without a committed offset the group would start at the topic's end or beginning per its
    // auto.offset.reset; our consumers use "earliest", so that is what a reset is compared to.
    let from = committed.unwrap_or(low).clamp(low, high);
    PartitionPlan { partition, committed, target, reread: (from - target).max(0), skipped: (target - from).max(0) }
}

fn admin_consumer(config: &ClientConfig, group: &str) -> Result<BaseConsumer, ReplayError> {
    Ok(config.clone().set("group.id", group).set("enable.auto.commit", "false").create()?)
}

/// Fails when the group has live members.
pub fn ensure_group_inactive(consumer: &BaseConsumer, group: &str) -> Result<(), ReplayError> {
    let groups = consumer.fetch_group_list(Some(group), TIMEOUT)?;
    for info in groups.groups() {
        if info.name() == group && !info.members().is_empty() {
            return Err(ReplayError::GroupActive {
                group: group.to_owned(),
                members: info.members().len(),
                state: info.state().to_owned(),
            });
        }
    }
    Ok(())
}

/// Works out the reset of `partitions` (all of the topic's when empty) without changing anything.
pub fn plan(
    config: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: &[i32],
    target: &Target,
) -> Result<Vec<PartitionPlan>, ReplayError> {
    let consumer = admin_consumer(config, group)?;
    ensure_group_inactive(&consumer, group)?;
    let positions = bxb_kafka::admin::group_positions(config, group, topic, TIMEOUT)?;
    let all: Vec<i32> = positions.iter().map(|p| p.partition).collect();
    if all.is_empty() {
        return Err(ReplayError::UnknownPartition(format!("topic {topic} does not exist")));
    }
    // Explicit offsets move only the partitions they name, unless --partitions says otherwise.
    let chosen: Vec<i32> = match (partitions.is_empty(), target) {
        (false, _) => partitions.to_vec(),
        (true, Target::Offsets(map)) => map.keys().copied().collect(),
        (true, _) => all.clone(),
    };
    if let Some(p) = chosen.iter().find(|p| !all.contains(p)) {
        return Err(ReplayError::UnknownPartition(format!("topic {topic} has no partition {p}")));
    }

    let by_time = match target {
        Target::Timestamp(ms) => {
            let mut query = TopicPartitionList::new();
            for p in &chosen {
                query.add_partition_offset(topic, *p, Offset::Offset(*ms))?;
            }
            Some(consumer.offsets_for_times(query, TIMEOUT)?)
        }
        _ => None,
    };

    let mut plans = Vec::with_capacity(chosen.len());
    for p in chosen {
        let position = positions.iter().find(|position| position.partition == p).expect("chosen among the topic's partitions");
        let (committed, low, high) = (position.committed, position.low, position.high);
        let requested = match target {
            Target::Earliest => low,
            Target::Latest => high,
            Target::Offsets(map) => match map.get(&p) {
                Some(o) => *o,
                None => committed.unwrap_or(low),
            },
            Target::Timestamp(_) => {
                match by_time.as_ref().and_then(|t| t.find_partition(topic, p)).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o,
                    // No record at or after the time: resume at the end.
                    _ => high,
                }
            }
        };
        plans.push(plan_partition(p, committed, low, high, requested));
    }
    Ok(plans)
}

/// Commits the planned offsets for the group, checking again that it is still inactive.
pub fn execute(config: &ClientConfig, group: &str, topic: &str, plans: &[PartitionPlan]) -> Result<(), ReplayError> {
    let consumer = admin_consumer(config, group)?;
    ensure_group_inactive(&consumer, group)?;
    let mut tpl = TopicPartitionList::new();
    for plan in plans {
        tpl.add_partition_offset(topic, plan.partition, Offset::Offset(plan.target))?;
    }
    consumer.commit(&tpl, CommitMode::Sync)?;
    Ok(())
}

/// Parses `PARTITION:OFFSET` pairs.
pub fn parse_offsets(pairs: &[String]) -> Result<BTreeMap<i32, i64>, String> {
    pairs
        .iter()
        .map(|pair| {
            let (p, o) = pair.split_once(':').ok_or_else(|| format!("expected PARTITION:OFFSET, got {pair:?}"))?;
            let p = p.trim().parse().map_err(|_| format!("bad partition in {pair:?}"))?;
            let o = o.trim().parse().map_err(|_| format!("bad offset in {pair:?}"))?;
            Ok((p, o))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewinding_counts_the_records_read_again() {
        let plan = plan_partition(0, Some(100), 10, 120, 10);
        assert_eq!((plan.target, plan.reread, plan.skipped), (10, 90, 0));
    }

    #[test]
    fn moving_forward_counts_the_records_skipped() {
        let plan = plan_partition(1, Some(50), 0, 120, 120);
        assert_eq!((plan.target, plan.reread, plan.skipped), (120, 0, 70));
    }

    #[test]
    fn targets_outside_the_partition_are_clamped() {
        assert_eq!(plan_partition(0, Some(5), 10, 20, 0).target, 10);
        assert_eq!(plan_partition(0, Some(15), 10, 20, 99).target, 20);
    }

    #[test]
    fn without_a_committed_offset_the_group_starts_at_the_beginning() {
        let plan = plan_partition(0, None, 0, 30, 30);
        assert_eq!((plan.reread, plan.skipped), (0, 30));
    }

    #[test]
    fn offsets_parse_as_partition_colon_offset() {
        assert_eq!(parse_offsets(&["0:5".into(), "3:17".into()]).unwrap(), BTreeMap::from([(0, 5), (3, 17)]));
        assert!(parse_offsets(&["0-5".into()]).is_err());
    }
}
