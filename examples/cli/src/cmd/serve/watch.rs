//! Generated text on its way out, watched for marks: stop texts (which end the answer and are
//! left out of it) and the opening of a tool call (after which text is held for parsing).
//! What may be the beginning of a mark is held back until the next piece settles it.

/// Text passing through, with the marks it is watched for.
#[derive(Debug)]
pub struct TextWatch {
    marks: Vec<String>,
    held: String,
}

impl TextWatch {
    /// Watches for `marks` (none: every piece passes at once).
    pub fn new(marks: Vec<String>) -> Self {
        TextWatch {
            marks,
            held: String::new(),
        }
    }

    /// Adds `piece`; returns the text that may go out now, and whether a mark was found. When
    /// one was, the text is everything before the earliest mark, which stays held with all
    /// that follows it ([`take`](Self::take)).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.held.push_str(piece);
        let found = self
            .marks
            .iter()
            .filter_map(|mark| self.held.find(mark.as_str()))
            .min();
        if let Some(at) = found {
            let rest = self.held.split_off(at);
            return (std::mem::replace(&mut self.held, rest), true);
        }
        let keep = self
            .marks
            .iter()
            .map(|mark| partial_match(&self.held, mark))
            .max()
            .unwrap_or(0);
        let rest = self.held.split_off(self.held.len() - keep);
        (std::mem::replace(&mut self.held, rest), false)
    }

    /// What is held: at the end of the answer, the start of a mark that never completed; after
    /// a mark was found, the mark and what followed.
    pub fn take(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The length of the longest end of `text` that is a proper beginning of `mark`.
fn partial_match(text: &str, mark: &str) -> usize {
    (1..mark.len())
        .rev()
        .find(|&n| mark.is_char_boundary(n) && text.ends_with(&mark[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut text = TextWatch::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        for piece in pieces {
            let (sent, stopped) = text.push(piece);
            out.push(sent);
            if stopped {
                return (out, true);
            }
        }
        out.push(text.take());
        (out, false)
    }

    #[test]
    fn a_mark_split_across_pieces_is_held_with_what_follows() {
        let mut text = TextWatch::new(vec!["</s>".to_string()]);
        assert_eq!(text.push("Hello <"), ("Hello ".to_string(), false));
        assert_eq!(text.push("/"), (String::new(), false));
        assert_eq!(text.push("s> world"), (String::new(), true));
        assert_eq!(text.take(), "</s> world");
    }

    #[test]
    fn a_false_start_is_released() {
        let (out, stopped) = run(&["END"], &["the E", "ND", "x"]);
        assert!(stopped);
        assert_eq!(out.concat(), "the ");
        let (out, stopped) = run(&["END"], &["the E", "Nx", " done"]);
        assert!(!stopped);
        assert_eq!(out, ["the ", "ENx", " done", ""]);
    }

    #[test]
    fn earliest_stop_wins_and_text_is_whole_without_stops() {
        let (out, _) = run(&["c", "ab"], &["xxabc"]);
        assert_eq!(out.concat(), "xx");
        let (out, stopped) = run(&[], &["a", "é", "b"]);
        assert!(!stopped);
        assert_eq!(out.concat(), "aéb");
        // A stop text beginning with a multi-byte character is matched on its boundaries.
        assert_eq!(partial_match("abé", "éz"), "é".len());
        assert_eq!(partial_match("ab", "éz"), 0);
    }
}
