//! Why a body was refused: the problems by event index and field (the first ones listed, all
//! counted, see [`ProblemList`]), plus the refusals that are about the body as a whole. The codes
//! are stable: the gateway answers with them and counts rejected events by them.

pub use super::problems::Problem;
use super::problems::ProblemList;

/// Why a body yields no events. Each variant is the client's mistake: retrying the same body
/// gets the same refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The body is not JSON, or not of the expected shape. The message is cut to
    /// `MAX_MESSAGE_CHARS` characters: the parser's messages may quote the body.
    #[error("the body is not valid JSON of the expected shape: {0}")]
    InvalidJson(String),
    /// The batch holds more events than the limit of the context.
    #[error("the batch holds {events} events, at most {limit} are allowed")]
    BatchTooLarge { events: usize, limit: usize },
    /// Events break field rules; the first problems are listed, every one is counted.
    #[error("{} problem(s) in the events", problems.total())]
    Invalid { problems: ProblemList },
    /// An event names another organization than the one the body is parsed for. Outranks
    /// [`Refusal::Invalid`]: such events may not be sent at all.
    #[error("events may only name the organization they are sent for")]
    OrganizationMismatch { problems: ProblemList },
}

impl Refusal {
    /// The stable code, the same the gateway answers with.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::Invalid { .. } => "validation_failed",
            Self::OrganizationMismatch { .. } => "organization_mismatch",
        }
    }

    /// The first problems by event and field (empty for refusals of the body as a whole).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems } | Self::OrganizationMismatch { problems } => problems.listed(),
            Self::InvalidJson(_) | Self::BatchTooLarge { .. } => &[],
        }
    }

    /// How many problems there are, listed or not (0 for refusals of the body as a whole).
    pub fn total_problems(&self) -> usize {
        match self {
            Self::Invalid { problems } | Self::OrganizationMismatch { problems } => problems.total(),
            Self::InvalidJson(_) | Self::BatchTooLarge { .. } => 0,
        }
    }
}

/// A refused body, and how many events it held as far as they could be told apart (0 when the
/// body was never understood), for counting rejected events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{refusal}")]
pub struct Rejection {
    pub refusal: Refusal,
    pub events: usize,
}
