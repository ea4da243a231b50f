//! Statements run on chdb, the current ClickHouse engine in-process: `run_sql.py` beside this
//! file, started with the Python of the virtualenv `./dev/install` fills (`chdb-python`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use bxb_consumer_clickhouse::EventRow;
use bxb_schemas::clickhouse::{
    create_database_sql, is_plain_identifier, DATABASE_EXISTS_QUERY, EVENTS_RAW_DDL, EVENTS_RAW_TABLE, TABLE_EXISTS_QUERY,
};
use bxb_tests::tools::tool;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// One statement, with what names it in a failure, and the values of its `{name:Type}` query
/// parameters if it has any.
#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    #[serde(skip)]
    pub label: String,
    pub sql: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<String, String>>,
}

impl Statement {
    pub fn new(label: impl Into<String>, sql: impl Into<String>) -> Self {
        Self { label: label.into(), sql: sql.into(), params: None }
    }

    pub fn with_params(mut self, params: &[(&str, String)]) -> Self {
        self.params = Some(params.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect());
        self
    }
}

#[derive(Debug, Deserialize)]
struct Answer {
    version: String,
    results: Vec<Outcome>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Outcome {
    Output { output: String },
    Error { error: String },
}

/// What a run answered: the server version and each statement's TabSeparatedRaw output.
#[derive(Debug)]
pub struct Run {
    pub version: String,
    pub outputs: Vec<String>,
}

/// Runs `statements` in order in one fresh chdb session; panics naming the first that fails.
pub fn run(statements: &[Statement]) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clickhouse_current/run_sql.py");
    let request = serde_json::to_vec(&serde_json::json!({ "statements": statements })).expect("statements serialize");
    let mut child = Command::new(tool("chdb-python"))
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chdb-python (./dev/install installs it)");
    child.stdin.take().expect("stdin is piped").write_all(&request).expect("send the statements");
    let done = child.wait_with_output().expect("wait for chdb-python");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{} failed ({}): {stderr}", script.display(), done.status);
    let answer: Answer = serde_json::from_slice(&done.stdout)
        .unwrap_or_else(|e| panic!("{} answered no JSON ({e}): {}", script.display(), String::from_utf8_lossy(&done.stdout)));
    let mut outputs = Vec::with_capacity(statements.len());
    for (statement, outcome) in statements.iter().zip(answer.results) {
        match outcome {
            Outcome::Output { output } => outputs.push(output),
            Outcome::Error { error } => {
                panic!("ClickHouse {} refused {}: {error}\n--- statement ---\n{}", answer.version, statement.label, statement.sql)
            }
        }
    }
    assert_eq!(outputs.len(), statements.len(), "chdb answered fewer statements than it was sent; stderr: {stderr}");
    Run { version: answer.version, outputs }
}

/// `sql` with each `?` replaced by the next name as a quoted string, as the clickhouse crate's
/// `bind` sends it; the names are plain identifiers, so nothing needs escaping.
pub fn bind(sql: &str, names: &[&str]) -> String {
    let mut names = names.iter();
    let bound: String = sql
        .split('?')
        .enumerate()
        .flat_map(|(i, part)| {
            let name = (i > 0).then(|| {
                let name = names.next().expect("a name for every ?");
                assert!(is_plain_identifier(name), "{name:?} would need escaping");
                format!("'{name}'")
            });
            name.into_iter().chain(std::iter::once(part.to_owned()))
        })
        .collect();
    assert!(names.next().is_none(), "more names than ? in {sql}");
    bound
}

/// What `bxb_schemas::clickhouse::migrate` sends for a new database, in its order, and once
/// more (the second `bxbctl migrate` finds both and creates nothing, but the DDL must stay
/// harmless to repeat). Outputs: 0, -, 1, -, 0, -, 1, -.
pub fn migrate(database: &str) -> Vec<Statement> {
    vec![
        Statement::new("the database check", bind(DATABASE_EXISTS_QUERY, &[database])),
        Statement::new("CREATE DATABASE", create_database_sql(database)),
        Statement::new("the database check after creating it", bind(DATABASE_EXISTS_QUERY, &[database])),
        // The DDL runs bound to the database (the HTTP `database` setting); USE is chdb's way.
        Statement::new("USE", format!("USE `{database}`")),
        Statement::new("the table check", bind(TABLE_EXISTS_QUERY, &[database, EVENTS_RAW_TABLE])),
        Statement::new("events_raw.sql", EVENTS_RAW_DDL),
        Statement::new("the table check after creating it", bind(TABLE_EXISTS_QUERY, &[database, EVENTS_RAW_TABLE])),
        Statement::new("events_raw.sql a second time", EVENTS_RAW_DDL),
    ]
}

/// The outputs [`migrate`]'s statements must give.
pub const MIGRATE_OUTPUTS: [&str; 8] = ["0\n", "", "1\n", "", "0\n", "", "1\n", ""];

/// An `INSERT ... VALUES` of `rows`, with the columns the consumer's RowBinary insert names.
pub fn insert(label: impl Into<String>, rows: &[EventRow]) -> Statement {
    let values: Vec<String> = rows.iter().map(values_tuple).collect();
    let sql = format!("INSERT INTO {EVENTS_RAW_TABLE} ({}) VALUES {}", EventRow::COLUMN_NAMES.join(", "), values.join(",\n"));
    Statement::new(label, sql)
}

fn values_tuple(row: &EventRow) -> String {
    let text = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
    let or_null = |value: Option<String>| value.unwrap_or_else(|| "NULL".to_owned());
    let fields = [
        text(&row.organization_id.hyphenated().to_string()),
        text(&row.transaction_id),
        text(&row.external_customer_id),
        text(&row.code),
        row.timestamp.to_string(),
        row.timestamp_ms.to_string(),
        text(&row.properties),
        // `{:?}` is Rust's shortest text that reads back as the same f64.
        or_null(row.value.map(|v| format!("{v:?}"))),
        or_null(row.decimal_value.map(crate::rows::scaled_text)),
        or_null(row.ingested_at_ms.map(|v| v.to_string())),
        row.written_at_ms.to_string(),
        row.kafka_partition.to_string(),
        row.kafka_offset.to_string(),
        row.appended_at_ms.to_string(),
    ];
    format!("({})", fields.join(", "))
}

#[cfg(test)]
mod tests {
    use super::bind;

    #[test]
    fn bind_quotes_each_name_in_order() {
        assert_eq!(bind("a = ? AND b = ?", &["x", "y_1"]), "a = 'x' AND b = 'y_1'");
        assert_eq!(bind("no placeholder", &[]), "no placeholder");
    }
}
