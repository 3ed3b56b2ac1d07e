//! "Did you mean" by edit distance.

/// Edit distance with adjacent transpositions (optimal string alignment) between short strings.
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j - 1] + cost)
                .min(d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}

/// The closest candidate within a distance that scales with the length of `name`.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (distance(name, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// A help line: "did you mean `x`?" or the list of what is allowed.
pub fn help<'a>(
    name: &str,
    what: &str,
    candidates: impl IntoIterator<Item = &'a str> + Clone,
) -> String {
    match closest(name, candidates.clone()) {
        Some(c) => format!("did you mean `{c}`?"),
        None => {
            let mut all: Vec<&str> = Vec::new();
            for c in candidates {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
            if all.is_empty() {
                format!("no {what} is declared")
            } else if all.len() <= 12 {
                format!(
                    "{what}: {}",
                    all.iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                format!("see docs/language.md for the {what}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("lr", "lr"), 0);
    }

    #[test]
    fn closest_respects_the_limit() {
        assert_eq!(closest("hiden", ["hidden", "init"]), Some("hidden"));
        assert_eq!(closest("xyz", ["hidden", "init"]), None);
        assert_eq!(closest("mnsit", ["mnist", "mnist_mini"]), Some("mnist"));
        assert_eq!(distance("ab", "ba"), 1);
    }
}
