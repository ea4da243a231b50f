//! PostgreSQL: the migrations of every table of the pipeline's database, and the code that
//! applies them and checks that they are applied.
//!
//! One sequence for the whole database (sqlx keeps one history per database), so the files of
//! every owner live in `postgres/migrations/` side by side. Each file is named
//! `<version>_<owner>_<what>.sql`: the owner is the component that writes the table and decides
//! its shape ([`TABLE_OWNERS`]; a unit test keeps the file names, the `CREATE TABLE`s and that
//! list in step). Applied migrations must never change (sqlx refuses a changed checksum): add a
//! new file instead, and keep changes additive so that running versions keep working.
//!
//! [`migrate`] is what `bxbctl migrate` (the Kubernetes Job, the compose `migrate` service,
//! `./dev/up`, the tests' databases) and the consumers with `BXB_MIGRATE_ON_START=true` run;
//! [`check`] is what consumer-postgres runs instead when it must not change the schema.

/// The components that own tables, as they appear in migration file names.
pub const OWNERS: &[&str] = &["consumer-postgres", "gateway"];

/// Every table the migrations create and the component that owns it. Others may read it
/// (`bxbctl verify` reads `billable_metrics` and `events`; operators fill `billable_metrics` and
/// `api_keys`), only the owner's migrations change it.
pub const TABLE_OWNERS: &[(&str, &str)] = &[
    ("billable_metrics", "consumer-postgres"),
    ("billable_metrics_changes", "consumer-postgres"),
    ("events", "consumer-postgres"),
    ("event_keys", "consumer-postgres"),
    ("api_keys", "gateway"),
];

#[cfg(feature = "postgres")]
pub use apply::*;

#[cfg(feature = "postgres")]
mod apply {
    use sqlx::migrate::{MigrateError, Migration, Migrator};
    use sqlx::PgPool;

    /// The migrations of `postgres/migrations/`, in order. sqlx takes an advisory lock while
    /// applying them, so several processes may run them at once.
    pub static MIGRATOR: Migrator = sqlx::migrate!("postgres/migrations");

    /// Applies every migration not applied yet, and refuses a database whose applied migrations
    /// differ from these files.
    pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
        MIGRATOR.run(pool).await
    }

    /// Why a database's schema is not the one this build expects.
    #[derive(Debug, thiserror::Error)]
    pub enum CheckError {
        /// The migration history could not be read.
        #[error("reading the PostgreSQL migration history: {0}")]
        Database(#[from] sqlx::Error),
        /// Migrations of this build are not applied, failed, or were changed after being applied.
        #[error("the PostgreSQL schema is not current ({}); apply it with `bxbctl migrate`", .problems.join("; "))]
        NotCurrent { problems: Vec<String> },
    }

    /// Checks, without changing anything, that every migration of this build is applied, as it
    /// is. Migrations the database has beyond these (a newer version migrated first) are fine:
    /// migrations are additive.
    pub async fn check(pool: &PgPool) -> Result<(), CheckError> {
        let has_history: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(pool).await?;
        let applied: Vec<(i64, Vec<u8>, bool)> = if has_history {
            sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations").fetch_all(pool).await?
        } else {
            Vec::new()
        };
        let problems = problems(MIGRATOR.iter(), &applied);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CheckError::NotCurrent { problems })
        }
    }

    /// What is wrong with the history `applied` (version, checksum, success) for `migrations`.
    fn problems<'a>(migrations: impl Iterator<Item = &'a Migration>, applied: &[(i64, Vec<u8>, bool)]) -> Vec<String> {
        let mut problems = Vec::new();
        for migration in migrations.filter(|m| !m.migration_type.is_down_migration()) {
            let name = format!("{} {}", migration.version, migration.description);
            match applied.iter().find(|(version, _, _)| *version == migration.version) {
                None => problems.push(format!("{name} is not applied")),
                Some((_, _, false)) => problems.push(format!("{name} failed part-way")),
                Some((_, checksum, true)) if checksum.as_slice() != &*migration.checksum => {
                    problems.push(format!("{name} was changed after it was applied"))
                }
                Some(_) => {}
            }
        }
        problems
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_history_is_current_when_every_migration_is_applied_unchanged() {
            let all: Vec<_> = MIGRATOR.iter().map(|m| (m.version, m.checksum.to_vec(), true)).collect();
            assert!(problems(MIGRATOR.iter(), &all).is_empty());
            let mut newer = all.clone();
            newer.push((99_991_231_000_000, vec![1], true));
            assert!(problems(MIGRATOR.iter(), &newer).is_empty(), "a newer schema is still current for this build");
        }

        #[test]
        fn missing_failed_and_changed_migrations_are_named() {
            let mut history: Vec<_> = MIGRATOR.iter().map(|m| (m.version, m.checksum.to_vec(), true)).collect();
            let (first, second, last) = (history[0].0, history[1].0, history.last().unwrap().0);
            history[0].1 = vec![0];
            history[1].2 = false;
            history.pop();
            let problems = problems(MIGRATOR.iter(), &history);
            assert_eq!(problems.len(), 3, "{problems:?}");
            assert!(problems[0].starts_with(&first.to_string()) && problems[0].ends_with("was changed after it was applied"));
            assert!(problems[1].starts_with(&second.to_string()) && problems[1].ends_with("failed part-way"));
            assert!(problems[2].starts_with(&last.to_string()) && problems[2].ends_with("is not applied"));
            assert_eq!(super::problems(MIGRATOR.iter(), &[]).len(), MIGRATOR.iter().count());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (file name, owner from the name, tables it creates).
    fn migrations() -> Vec<(String, String, Vec<String>)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/postgres/migrations");
        let mut files: Vec<_> = std::fs::read_dir(dir).expect("the migrations folder").map(|e| e.expect("an entry").path()).collect();
        files.sort();
        files
            .into_iter()
            .map(|path| {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let (version, rest) = name.split_once('_').unwrap_or_else(|| panic!("{name}: not <version>_<owner>_<what>.sql"));
                assert!(version.len() == 14 && version.bytes().all(|b| b.is_ascii_digit()), "{name}: the version is a 14-digit time");
                assert!(rest.ends_with(".sql"), "{name}: not an .sql file");
                let owner = OWNERS
                    .iter()
                    .find(|o| rest.starts_with(&format!("{o}_")))
                    .unwrap_or_else(|| panic!("{name}: the word after the version must be an owner, one of {OWNERS:?}"));
                let sql = std::fs::read_to_string(&path).expect("UTF-8 SQL");
                let tables = sql
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("CREATE TABLE "))
                    .map(|l| l.trim_start_matches("IF NOT EXISTS ").split([' ', '(']).next().unwrap().to_owned())
                    .collect();
                (name.clone(), (*owner).to_owned(), tables)
            })
            .collect()
    }

    #[test]
    fn every_migration_names_the_owner_of_the_tables_it_creates() {
        let migrations = migrations();
        assert!(migrations.len() >= 3, "found {migrations:?}");
        let mut created = Vec::new();
        for (file, owner, tables) in &migrations {
            for table in tables {
                let listed =
                    TABLE_OWNERS.iter().find(|(t, _)| t == table).unwrap_or_else(|| panic!("{file}: {table} is not in TABLE_OWNERS"));
                assert_eq!(listed.1, owner, "{file} creates {table}, which TABLE_OWNERS gives to {}", listed.1);
                created.push(table.as_str());
            }
        }
        for (table, _) in TABLE_OWNERS {
            assert_eq!(created.iter().filter(|t| *t == table).count(), 1, "{table} must be created by exactly one migration");
        }
    }
}
