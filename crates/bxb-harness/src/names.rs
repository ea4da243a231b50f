//! The names one run owns on the shared services: never the dev stack's `events` topic, `bxb`
//! databases or `bxb-*` groups, and different in every run, so runs and tests never collide.

use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct RunNames {
    /// `bench`, `chaos`: starts every name, so a leftover says which tool left it.
    pub tool: &'static str,
    /// Ten random hex digits.
    pub id: String,
}

impl RunNames {
    /// New names for one run of `tool` (lowercase ASCII letters: it is part of database names).
    pub fn new(tool: &'static str) -> Self {
        debug_assert!(!tool.is_empty() && tool.bytes().all(|b| b.is_ascii_lowercase()), "{tool:?}");
        Self { tool, id: Uuid::new_v4().simple().to_string()[..10].to_owned() }
    }

    /// `<tool>-<id>`: the run's scratch directory, and the start of its topics and groups.
    pub fn run(&self) -> String {
        format!("{}-{}", self.tool, self.id)
    }

    pub fn topic(&self, what: &str) -> String {
        format!("{}-{what}", self.run())
    }

    pub fn group(&self, what: &str) -> String {
        format!("{}-{what}", self.run())
    }

    /// A database name valid in both PostgreSQL and ClickHouse (`what`: letters, digits, `_`).
    pub fn database(&self, what: &str) -> String {
        format!("bxb_{}_{}_{what}", self.tool, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_are_unique_and_never_the_dev_stacks() {
        let (a, b) = (RunNames::new("bench"), RunNames::new("bench"));
        assert_ne!(a.topic("gw"), b.topic("gw"));
        assert_ne!(a.topic("events"), "events");
        assert!(a.group("pg").starts_with("bench-") && !a.group("pg").starts_with("bxb-"));
        assert!(a.database("ch").starts_with("bxb_bench_"));
        assert_ne!(a.database("ch"), "bxb");
        assert!(a.database("ch").bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    }
}
