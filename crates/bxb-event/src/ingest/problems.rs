//! The problems of a refused body, as they are reported: the first ones in full, every one
//! counted. A body can hold a problem every few bytes (`{"":0,"":0,...}` is one unknown field
//! per 5 bytes), so listing them all would make the answer, and the memory behind it, many times
//! the body; the list is capped by count and by size, and `total` says how many there were.

use serde::Serialize;

/// At most this many problems are listed.
pub const MAX_LISTED_PROBLEMS: usize = 100;
/// The listed problems, as JSON, take at most this many bytes (a problem echoes a field name of
/// up to 64 characters, which JSON may escape to 6 bytes each).
pub const MAX_LISTED_PROBLEM_BYTES: usize = 48 * 1024;
/// A field name in a problem is cut to this many characters.
pub const MAX_FIELD_CHARS: usize = 64;
/// A message (of a problem or of a refusal) is cut to this many characters.
pub const MAX_MESSAGE_CHARS: usize = 256;
/// What the error answer of any refused body stays within: the listed problems, the message
/// and the code, as JSON. Checked for every input by the property tests and the fuzz targets.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// One problem of one event: which event (0-based position in the body; 0 for a single event),
/// which field (empty when the event as a whole is wrong), a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub index: usize,
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl Problem {
    /// The field is cut to [`MAX_FIELD_CHARS`] and the message to [`MAX_MESSAGE_CHARS`]
    /// characters, so a problem stays small whatever it echoes.
    pub fn new(index: usize, field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self { index, field: cut(field.into(), MAX_FIELD_CHARS), code, message: cut(message.into(), MAX_MESSAGE_CHARS) }
    }
}

/// `text` cut to `max_chars` characters, the cut marked with an ellipsis.
pub fn cut(mut text: String, max_chars: usize) -> String {
    if text.len() <= max_chars {
        return text;
    }
    if let Some((at, _)) = text.char_indices().nth(max_chars) {
        text.truncate(at);
        text.push('…');
    }
    text
}

/// Problems in the order they were found: the first ones listed, as many as fit within
/// [`MAX_LISTED_PROBLEMS`] and [`MAX_LISTED_PROBLEM_BYTES`], and the count of all of them.
/// Once one does not fit, none after it is listed, so the list is always the first ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProblemList {
    listed: Vec<Problem>,
    listed_bytes: usize,
    total: usize,
    full: bool,
}

impl ProblemList {
    /// Counts a problem, and lists it if there is room. `make` runs only then, so a problem past
    /// the cap costs a count, not a message.
    pub fn add(&mut self, make: impl FnOnce() -> Problem) {
        self.total += 1;
        if self.full {
            return;
        }
        let problem = make();
        // The comma between two problems of the JSON array.
        let bytes = json_len(&problem) + 1;
        if self.listed_bytes + bytes > MAX_LISTED_PROBLEM_BYTES {
            self.full = true;
            return;
        }
        self.listed_bytes += bytes;
        self.listed.push(problem);
        self.full = self.listed.len() == MAX_LISTED_PROBLEMS;
    }

    pub fn push(&mut self, problem: Problem) {
        self.add(|| problem);
    }

    /// Counts `count` problems that are past the list for sure (the list is full).
    pub(crate) fn count_unlisted(&mut self, count: usize) {
        debug_assert!(count == 0 || self.full, "only problems past a full list go uncounted in it");
        self.total += count;
    }

    /// The first problems, in the order they were found.
    pub fn listed(&self) -> &[Problem] {
        &self.listed
    }

    pub fn into_listed(self) -> Vec<Problem> {
        self.listed
    }

    /// Every problem, listed or not.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl FromIterator<Problem> for ProblemList {
    fn from_iter<I: IntoIterator<Item = Problem>>(problems: I) -> Self {
        let mut list = Self::default();
        for problem in problems {
            list.push(problem);
        }
        list
    }
}

/// The length of `value` as JSON, without keeping the text.
pub fn json_len(value: &impl Serialize) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).expect("a problem serialises");
    counter.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_problems_are_listed_and_every_one_counted() {
        let list: ProblemList = (0..1_000).map(|i| Problem::new(i, "code", "invalid_characters", "bad")).collect();
        assert_eq!((list.listed().len(), list.total()), (MAX_LISTED_PROBLEMS, 1_000));
        assert!(list.listed().iter().enumerate().all(|(i, p)| p.index == i));
        assert!(ProblemList::default().is_empty());
    }

    #[test]
    fn large_problems_are_listed_within_the_byte_cap() {
        let wide = "\u{1}".repeat(1_000);
        let list: ProblemList =
            (0..1_000).map(|i| Problem::new(i, wide.clone(), "unknown_field", format!("{wide:?} is not an event field"))).collect();
        assert_eq!(list.total(), 1_000);
        assert!(!list.listed().is_empty() && list.listed().len() < MAX_LISTED_PROBLEMS, "{}", list.listed().len());
        assert!(json_len(&list.listed()) <= MAX_LISTED_PROBLEM_BYTES, "{}", json_len(&list.listed()));
        let first = &list.listed()[0];
        assert_eq!(first.field.chars().count(), MAX_FIELD_CHARS + 1, "cut, with the ellipsis");
        assert_eq!(first.message.chars().count(), MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn a_problem_past_the_cap_is_never_made() {
        let mut list: ProblemList = (0..MAX_LISTED_PROBLEMS).map(|i| Problem::new(i, "", "x", "y")).collect();
        list.add(|| panic!("made past the cap"));
        assert_eq!(list.total(), MAX_LISTED_PROBLEMS + 1);
    }

    #[test]
    fn cutting_keeps_whole_characters() {
        assert_eq!(cut("éééé".into(), 2), "éé…");
        assert_eq!(cut("abc".into(), 3), "abc");
        // Four bytes, two characters: nothing to cut.
        assert_eq!(cut("éé".into(), 3), "éé");
    }
}
