//! Shell-style patterns on device names: `*` matches any run of characters, `?` one.

/// Whether `name` matches `pattern` (case-sensitive).
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matching with one backtrack point for the last `*` seen.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((star_pi, star_ni)) = star {
            pi = star_pi + 1;
            ni = star_ni + 1;
            star = Some((star_pi, star_ni + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether `name` matches any of the comma-separated patterns in `patterns`.
pub fn matches_any(patterns: &str, name: &str) -> bool {
    patterns
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| matches(p, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        assert!(matches("lobby-*", "lobby-phone"));
        assert!(matches("lobby-*", "lobby-"));
        assert!(!matches("lobby-*", "my-lobby-phone"));
        assert!(matches("*desk*", "alice-desk-2"));
        assert!(matches("desk-?", "desk-3"));
        assert!(!matches("desk-?", "desk-33"));
        assert!(matches("*", ""));
        assert!(!matches("", "x"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
    }

    #[test]
    fn lists_of_patterns() {
        assert!(matches_any("lobby-*, kiosk-*", "kiosk-1"));
        assert!(!matches_any("lobby-*, kiosk-*", "desk"));
        assert!(!matches_any("", "desk"));
    }
}
