//! The source lines an earlier run settled (accepted, skipped or rejected), which a resumed
//! run leaves out.

/// The source lines an earlier run settled (accepted, skipped or rejected).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettledLines {
    /// Sorted, merged, inclusive ranges.
    ranges: Vec<(u64, u64)>,
}

impl SettledLines {
    /// No lines: what a run that resumes nothing leaves out.
    pub const EMPTY: SettledLines = SettledLines { ranges: Vec::new() };

    /// Merges any ranges into a sorted set.
    pub fn from_ranges(mut ranges: Vec<(u64, u64)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (first, last) in ranges {
            match merged.last_mut() {
                Some((_, end)) if first <= end.saturating_add(1) => *end = (*end).max(last),
                _ => merged.push((first, last)),
            }
        }
        SettledLines { ranges: merged }
    }

    /// How many lines are settled.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.ranges
            .iter()
            .map(|(first, last)| last - first + 1)
            .sum()
    }

    /// The merged ranges.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// A reader for lines asked in increasing order (as a source yields them).
    pub fn cursor(&self) -> SettledCursor<'_> {
        SettledCursor {
            ranges: &self.ranges,
            next: 0,
        }
    }
}

/// Answers "is this line settled?" for increasing lines in amortised constant time.
pub struct SettledCursor<'a> {
    ranges: &'a [(u64, u64)],
    next: usize,
}

impl SettledCursor<'_> {
    /// Whether `line` is settled; lines must be asked in increasing order.
    pub fn contains(&mut self, line: u64) -> bool {
        while let Some(&(_, last)) = self.ranges.get(self.next) {
            if last >= line {
                return self.ranges[self.next].0 <= line;
            }
            self.next += 1;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_lines_merge_and_answer_in_order() {
        let lines = SettledLines::from_ranges(vec![(10, 12), (2, 4), (5, 5), (20, 30), (11, 15)]);
        assert_eq!(lines.ranges(), &[(2, 5), (10, 15), (20, 30)]);
        assert_eq!(lines.len(), 4 + 6 + 11);
        let mut cursor = lines.cursor();
        let settled: Vec<u64> = (1..=32).filter(|line| cursor.contains(*line)).collect();
        let expected: Vec<u64> = (2..=5).chain(10..=15).chain(20..=30).collect();
        assert_eq!(settled, expected);
    }
}
