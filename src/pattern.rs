//! Name patterns shared by ingest's field rules, detection and suppressions:
//! one small glob dialect, so a pattern means the same wherever it is written.

/// A glob where `*` matches any run of characters (`Put*Policy`, `*Denied*`).
pub fn name_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, n, m) in [
            ("Put*Policy", "PutBucketPolicy", true),
            ("Put*Policy", "PutPolicyX", false),
            ("*Denied*", "AccessDeniedException", true),
            ("Get*", "GetObject", true),
            ("*", "", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("exact", "exactly", false),
        ] {
            assert_eq!(name_matches(p, n), m, "{p} {n}");
        }
    }
}
