//! Topic patterns, as `submsg` takes them.
//!
//! A pattern is matched against a topic name level by level (levels are
//! separated by `/`):
//!
//! | pattern | matches |
//! | --- | --- |
//! | `robot/arm` | exactly that topic |
//! | `robot/+/joint1` | `+` is exactly one level: `robot/left/joint1`, not `robot/joint1` |
//! | `robot/#` | `#` (last level only) is the rest, zero or more levels, as in MQTT: `robot`, `robot/arm`, `robot/arm/joint1` |
//! | `file.*` | a trailing `*` is a prefix match on the rest of the name: `file.opened`, `file.closed/x` |
//! | `*`, `#` | every topic |
//!
//! `+` and `#` must be whole levels; `*` may only end a pattern. The
//! literal parts follow the topic name rule (`[A-Za-z0-9._-]`).

use std::fmt;

/// One level of a pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Level {
    /// This exact level.
    Lit(String),
    /// `+`: any one level.
    Any,
}

/// What may follow the pattern's levels.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tail {
    /// Nothing: the name has exactly as many levels.
    End,
    /// `#`: zero or more further levels.
    Rest,
    /// `PREFIX*`: a further level starting with the prefix, then anything.
    Prefix(String),
}

/// A parsed topic pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    levels: Vec<Level>,
    tail: Tail,
}

/// Why a pattern is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
    /// What is wrong with it.
    pub why: String,
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid topic pattern {:?}: {}", self.pattern, self.why)
    }
}

impl std::error::Error for PatternError {}

fn name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

impl Pattern {
    /// Parses a pattern (see the module documentation).
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let err = |why: &str| PatternError {
            pattern: text.to_string(),
            why: why.to_string(),
        };
        if text.is_empty() {
            return Err(err("it is empty"));
        }
        let parts: Vec<&str> = text.split('/').collect();
        let last = parts.len() - 1;
        let mut levels = Vec::new();
        let mut tail = Tail::End;
        for (i, part) in parts.iter().enumerate() {
            let part = *part;
            if part == "+" {
                levels.push(Level::Any);
                continue;
            }
            if part == "#" {
                if i != last {
                    return Err(err("'#' may only be the last level"));
                }
                tail = Tail::Rest;
                continue;
            }
            let (lit, prefix) = match part.strip_suffix('*') {
                Some(p) if i == last => (p, true),
                Some(_) => return Err(err("'*' may only end the pattern")),
                None => (part, false),
            };
            if lit.is_empty() && !prefix {
                return Err(err("it has an empty level"));
            }
            if lit == "." || lit == ".." {
                return Err(err("a level is '.' or '..'"));
            }
            if let Some(b) = lit.bytes().find(|&b| !name_byte(b)) {
                return Err(err(&match b {
                    b'+' | b'#' => format!("'{}' must be a whole level", char::from(b)),
                    b'*' => "'*' may only end the pattern".to_string(),
                    _ => format!(
                        "it contains {:?}; topic names use letters, digits, '.', '_', '-' and '/'",
                        char::from(b)
                    ),
                }));
            }
            if prefix {
                tail = Tail::Prefix(lit.to_string());
            } else {
                levels.push(Level::Lit(lit.to_string()));
            }
        }
        Ok(Self {
            text: text.to_string(),
            levels,
            tail,
        })
    }

    /// The pattern as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `Some(name)` when the pattern is one exact topic name (no wildcard).
    pub fn exact(&self) -> Option<&str> {
        let plain =
            self.tail == Tail::End && self.levels.iter().all(|l| matches!(l, Level::Lit(_)));
        plain.then_some(self.text.as_str())
    }

    /// Whether `name` (a topic name) matches.
    pub fn matches(&self, name: &str) -> bool {
        let mut names = name.split('/');
        for level in &self.levels {
            match (level, names.next()) {
                (_, None) => return false,
                (Level::Any, Some(_)) => {}
                (Level::Lit(l), Some(n)) => {
                    if l != n {
                        return false;
                    }
                }
            }
        }
        match &self.tail {
            Tail::End => names.next().is_none(),
            Tail::Rest => true,
            Tail::Prefix(p) => names.next().is_some_and(|n| n.starts_with(p.as_str())),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

/// Splits command-line items that may be comma-separated lists
/// (`a,b c` is `a`, `b`, `c`). An empty item is refused.
pub fn split_list<S: AsRef<str>>(items: &[S]) -> Result<Vec<String>, PatternError> {
    let mut out = Vec::new();
    for item in items {
        let item = item.as_ref();
        for part in item.split(',') {
            if part.is_empty() {
                return Err(PatternError {
                    pattern: item.to_string(),
                    why: "the list has an empty item".to_string(),
                });
            }
            out.push(part.to_string());
        }
    }
    Ok(out)
}

/// Which topics to take: those matching any include pattern (every topic
/// when there is none) and no exclude pattern.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// Include patterns; empty means every topic.
    pub include: Vec<Pattern>,
    /// Exclude patterns.
    pub exclude: Vec<Pattern>,
}

impl Selection {
    /// Whether topic `name` is selected.
    pub fn matches(&self, name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(name)))
            && !self.excluded(name)
    }

    /// Whether topic `name` is excluded.
    pub fn excluded(&self, name: &str) -> bool {
        self.exclude.iter().any(|p| p.matches(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(p: &str, n: &str) -> bool {
        Pattern::parse(p).unwrap().matches(n)
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("robot/arm", "robot/arm", true),
            ("robot/arm", "robot/arm/x", false),
            ("robot/arm", "robot", false),
            ("robot/+/joint1", "robot/left/joint1", true),
            ("robot/+/joint1", "robot/joint1", false),
            ("robot/+/joint1", "robot/a/b/joint1", false),
            ("robot/+/joint1", "robot/left/joint2", false),
            ("robot/#", "robot", true),
            ("robot/#", "robot/arm", true),
            ("robot/#", "robot/arm/joint1", true),
            ("robot/#", "robots", false),
            ("robot/#", "other/robot", false),
            ("+", "a", true),
            ("+", "a/b", false),
            ("+/#", "a/b/c", true),
            ("#", "a/b/c", true),
            ("#", "x", true),
            ("*", "x", true),
            ("*", "x/y/z", true),
            ("file.*", "file.opened", true),
            ("file.*", "file.closed", true),
            ("file.*", "file.", true),
            ("file.*", "file", false),
            ("file.*", "file.opened/deep", true),
            ("file.*", "files.opened", false),
            ("robot/*", "robot/arm", true),
            ("robot/*", "robot", false),
            ("robot/a*", "robot/arm/joint1", true),
            ("robot/+/j*", "robot/left/joint1", true),
            ("robot/+/j*", "robot/left/knee", false),
            ("fanout0", "fanout0", true),
            ("fanout*", "fanout3", true),
        ];
        for &(p, n, want) in cases {
            assert_eq!(m(p, n), want, "pattern {p:?} on {n:?}");
        }
    }

    #[test]
    fn exact_only_without_wildcards() {
        assert_eq!(Pattern::parse("a/b").unwrap().exact(), Some("a/b"));
        for p in ["a/+", "a/#", "a*", "*", "#", "+"] {
            assert_eq!(Pattern::parse(p).unwrap().exact(), None, "{p}");
        }
    }

    #[test]
    fn bad_patterns_say_why() {
        let why = |p: &str| Pattern::parse(p).unwrap_err().to_string();
        assert!(why("a/#/b").contains("'#' may only be the last level"));
        assert!(why("a*/b").contains("'*' may only end"));
        assert!(why("a*b").contains("'*' may only end"));
        assert!(why("a+").contains("'+' must be a whole level"));
        assert!(why("a#").contains("'#' must be a whole level"));
        assert!(why("a//b").contains("empty level"));
        assert!(why("/a").contains("empty level"));
        assert!(why("").contains("empty"));
        assert!(why("a/../b").contains("'..'"));
        assert!(why("a b").contains("' '"));
    }

    #[test]
    fn lists() {
        assert_eq!(split_list(&["a,b", "c"]).unwrap(), vec!["a", "b", "c"]);
        assert!(split_list(&["a,,b"]).is_err());
        assert!(split_list(&["a,"]).is_err());
        assert!(split_list::<&str>(&[]).unwrap().is_empty());
    }

    #[test]
    fn selection() {
        let p = |s: &str| Pattern::parse(s).unwrap();
        let all = Selection::default();
        assert!(all.matches("anything"));
        let s = Selection {
            include: vec![p("robot/#"), p("file.*")],
            exclude: vec![p("robot/+/secret"), p("file.tmp")],
        };
        assert!(s.matches("robot/arm"));
        assert!(!s.matches("robot/arm/secret"));
        assert!(s.matches("file.opened"));
        assert!(!s.matches("file.tmp"));
        assert!(!s.matches("other"));
        let excl = Selection {
            include: vec![],
            exclude: vec![p("fanout*")],
        };
        assert!(excl.matches("t") && !excl.matches("fanout0"));
    }

    fn level() -> impl Strategy<Value = String> {
        "[a-c]{1,2}"
    }

    fn name() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..5).prop_map(|v| v.join("/"))
    }

    /// A straightforward reference matcher: recursion over levels.
    fn model(p: &[&str], n: &[&str]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(&"#"), _) if p.len() == 1 => true,
            (Some(l), Some(x)) if p.len() == 1 && l.ends_with('*') => {
                x.starts_with(&l[..l.len() - 1])
            }
            (Some(&"+"), Some(_)) => model(&p[1..], &n[1..]),
            (Some(l), Some(x)) if l == x => model(&p[1..], &n[1..]),
            _ => false,
        }
    }

    fn pattern() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(prop_oneof![level(), Just("+".to_string())], 0..4),
            prop_oneof![
                Just(String::new()),
                Just("#".to_string()),
                "[a-c]{0,1}".prop_map(|p| format!("{p}*")),
                level(),
            ],
        )
            .prop_filter_map("empty pattern", |(levels, tail)| {
                let mut parts = levels;
                if !tail.is_empty() {
                    parts.push(tail);
                }
                (!parts.is_empty()).then(|| parts.join("/"))
            })
    }

    proptest! {
        #[test]
        fn agrees_with_the_model(p in pattern(), n in name()) {
            let ps: Vec<&str> = p.split('/').collect();
            let ns: Vec<&str> = n.split('/').collect();
            prop_assert_eq!(m(&p, &n), model(&ps, &ns), "pattern {} name {}", p, n);
        }

        #[test]
        fn a_name_matches_itself_only(a in name(), b in name()) {
            prop_assert!(m(&a, &a));
            prop_assert_eq!(m(&a, &b), a == b);
        }

        #[test]
        fn plus_for_any_level_still_matches(n in name(), mask in proptest::collection::vec(any::<bool>(), 5)) {
            let p: Vec<&str> = n
                .split('/')
                .zip(mask.iter().cycle())
                .map(|(l, &plus)| if plus { "+" } else { l })
                .collect();
            prop_assert!(m(&p.join("/"), &n));
        }

        /// Without `+` or `#`, `P*` is exactly a string prefix match.
        #[test]
        fn star_is_a_string_prefix(prefix in "[a-c/]{0,6}", n in name()) {
            let p = format!("{prefix}*");
            match Pattern::parse(&p) {
                Ok(pat) => prop_assert_eq!(pat.matches(&n), n.starts_with(&prefix)),
                Err(_) => prop_assert!(prefix.starts_with('/') || prefix.contains("//")),
            }
        }

        /// `#` at the end matches the parent and everything below it.
        #[test]
        fn hash_is_the_subtree(n in name(), k in 0usize..5) {
            let levels: Vec<&str> = n.split('/').collect();
            let k = k.min(levels.len());
            let mut p = levels[..k].join("/");
            p.push_str(if k == 0 { "#" } else { "/#" });
            prop_assert!(m(&p, &n));
            if k > 0 {
                let parent = levels[..k - 1].join("/");
                if !parent.is_empty() {
                    prop_assert!(!m(&p, &parent));
                }
            }
        }

        #[test]
        fn parse_never_panics(s in ".{0,20}") {
            let _ = Pattern::parse(&s);
        }
    }
}
