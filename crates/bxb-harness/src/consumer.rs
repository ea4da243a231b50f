//! The two consumers under test: which binary, and the settings of one instance (its own
//! topic, dead-letter topic, group and store on the shared services).

use std::path::Path;

use crate::error::Result;
use crate::process::{self, Running};
use crate::stack::StackArgs;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum ConsumerKind {
    #[serde(rename = "consumer-clickhouse")]
    ClickHouse,
    #[serde(rename = "consumer-postgres")]
    Postgres,
}

impl ConsumerKind {
    pub const ALL: [Self; 2] = [Self::ClickHouse, Self::Postgres];

    /// Its binary's name (in the bin dir, and in reports).
    pub fn binary(self) -> &'static str {
        match self {
            Self::ClickHouse => "consumer-clickhouse",
            Self::Postgres => "consumer-postgres",
        }
    }
}

/// The settings of one consumer instance.
#[derive(Debug, Clone)]
pub struct ConsumerSetup {
    pub kind: ConsumerKind,
    pub topic: String,
    pub dlq_topic: String,
    pub group: String,
    /// The run's database: in ClickHouse, or on the stack's PostgreSQL server (created first).
    pub database: String,
    /// `BXB_BILLABLE_CODES` of consumer-postgres, comma-separated; consumer-clickhouse takes all.
    pub billable_codes: String,
    /// Further settings (`BXB_BATCH_MAX_EVENTS`, `BXB_KAFKA_OPTIONS`, a `--consumer-env` of the
    /// command line), after the ones above so that they can override them.
    pub extra_env: Vec<(String, String)>,
}

impl ConsumerSetup {
    /// The instance's `BXB_*` environment (nothing else reaches it: [`process::command`]).
    pub fn env(&self, stack: &StackArgs) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = vec![
            ("BXB_KAFKA_BROKERS".into(), stack.kafka_brokers.clone()),
            ("BXB_SCHEMA_REGISTRY_URL".into(), stack.registry_url.clone()),
            ("BXB_EVENTS_TOPIC".into(), self.topic.clone()),
            ("BXB_DLQ_TOPIC".into(), self.dlq_topic.clone()),
            ("BXB_CONSUMER_GROUP".into(), self.group.clone()),
        ];
        match self.kind {
            ConsumerKind::ClickHouse => {
                env.push(("BXB_CLICKHOUSE_URL".into(), stack.clickhouse_url.clone()));
                env.push(("BXB_CLICKHOUSE_DATABASE".into(), self.database.clone()));
            }
            ConsumerKind::Postgres => {
                env.push(("BXB_POSTGRES_URL".into(), stack.postgres_url_of(&self.database)));
                env.push(("BXB_BILLABLE_CODES".into(), self.billable_codes.clone()));
            }
        }
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// Starts one instance labelled `label` and waits until it is ready.
    pub async fn start(&self, stack: &StackArgs, bin_dir: &Path, label: &str, log_dir: &Path) -> Result<Running> {
        process::start(bin_dir, self.kind.binary(), label, &self.env(stack), log_dir).await
    }
}

/// `KEY=VALUE` arguments (`--consumer-env`) as pairs; one without `=` is skipped.
pub fn env_pairs(arguments: &[String]) -> Vec<(String, String)> {
    arguments.iter().filter_map(|pair| pair.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(kind: ConsumerKind) -> ConsumerSetup {
        ConsumerSetup {
            kind,
            topic: "t".into(),
            dlq_topic: "t-dlq".into(),
            group: "g".into(),
            database: "bxb_x_1_db".into(),
            billable_codes: "a,b".into(),
            extra_env: env_pairs(&["BXB_BATCH_MAX_EVENTS=7".into(), "BXB_BILLABLE_CODES=c".into(), "no-equals".into()]),
        }
    }

    fn value(env: &[(String, String)], key: &str) -> Option<String> {
        env.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    #[test]
    fn each_consumer_gets_its_own_store_and_the_extras_last() {
        let stack = crate::stack::parse(&["--postgres-url", "postgres://u:p@h:1/bxb?sslmode=disable"]);
        let pg = setup(ConsumerKind::Postgres).env(&stack);
        assert_eq!(value(&pg, "BXB_POSTGRES_URL").as_deref(), Some("postgres://u:p@h:1/bxb_x_1_db?sslmode=disable"));
        assert_eq!(value(&pg, "BXB_CLICKHOUSE_DATABASE"), None);
        // Passed last, so the command line's value is the one the consumer sees.
        assert_eq!(value(&pg, "BXB_BILLABLE_CODES").as_deref(), Some("c"));
        assert_eq!(value(&pg, "BXB_BATCH_MAX_EVENTS").as_deref(), Some("7"));
        let ch = setup(ConsumerKind::ClickHouse).env(&stack);
        assert_eq!(value(&ch, "BXB_CLICKHOUSE_DATABASE").as_deref(), Some("bxb_x_1_db"));
        assert_eq!(value(&ch, "BXB_POSTGRES_URL"), None);
        assert_eq!(value(&ch, "BXB_CONSUMER_GROUP").as_deref(), Some("g"));
        assert_eq!(value(&ch, "BXB_DLQ_TOPIC").as_deref(), Some("t-dlq"));
    }
}
