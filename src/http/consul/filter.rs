//! The `filter` query parameter: the subset of Consul's expression language (go-bexpr) that
//! selects instances by what signpost keeps of them. A filter outside the subset is a 400,
//! never ignored: an ignored filter would silently widen what a tool sees.
//!
//! Grammar (keywords lowercase, as bexpr's):
//!
//! ```text
//! expr    := and ("or" and)*
//! and     := unary ("and" unary)*
//! unary   := "not" unary | "(" expr ")" | match
//! match   := selector ("==" | "!=") value
//!          | selector ["not"] "contains" value
//!          | value ["not"] "in" selector
//!          | selector "is" ["not"] "empty"
//! value   := "double-quoted" | `back-quoted` | bare word
//! ```
//!
//! Selectors, under each spelling the Consul endpoints use for them (health's
//! `Service.Tags`, catalog's `ServiceTags`, the agent's `Tags`), all accepted everywhere:
//! the tags (a list: `contains`, `in`, `is empty`), the metadata (a map: `contains`/`in` test
//! a key, `is empty`), one metadata value (`Service.Meta.<key>`: a string), the service name
//! and the instance ID (strings: `==`, `!=`, `contains`/`in` as substring, `is empty`).
//! Names and tags are compared without case (names are DNS labels, compared lowercased
//! everywhere in signpost; tags as Consul's tag filter compares them); metadata is compared
//! exactly. A missing metadata key is the empty string.

use std::collections::BTreeMap;

/// What a filter looks at in one instance.
pub(crate) struct Subject<'a> {
    pub name: &'a str,
    pub id: &'a str,
    pub tags: &'a [&'a str],
    pub meta: &'a BTreeMap<String, String>,
}

/// A parsed filter expression.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    Or(Box<Filter>, Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Match(Selector, Op, String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Selector {
    Tags,
    Meta,
    MetaKey(String),
    Name,
    Id,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Contains,
    NotContains,
    IsEmpty,
    IsNotEmpty,
}

const SELECTORS: &str = "Service.Tags, Service.Meta, Service.Meta.<key>, Service.Service, \
    Service.ID (or ServiceTags, ServiceMeta, ServiceName, ServiceID, Tags, Meta, Service, ID)";

impl Selector {
    fn parse(s: &str) -> Result<Self, String> {
        for prefix in ["Service.Meta.", "ServiceMeta.", "Meta."] {
            if let Some(key) = s.strip_prefix(prefix) {
                if key.is_empty() {
                    break;
                }
                return Ok(Selector::MetaKey(key.to_string()));
            }
        }
        Ok(match s {
            "Service.Tags" | "ServiceTags" | "Tags" => Selector::Tags,
            "Service.Meta" | "ServiceMeta" | "Meta" => Selector::Meta,
            "Service.Service" | "ServiceName" | "Service" => Selector::Name,
            "Service.ID" | "ServiceID" | "ID" => Selector::Id,
            other => {
                return Err(format!(
                    "selector {other:?} is not supported (supported: {SELECTORS})"
                ));
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    Eq,
    Ne,
    /// A quoted string: always a value.
    Quoted(String),
    /// A bare word: a keyword, a selector or a value, by position.
    Word(String),
}

fn tokens(src: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = src.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '(' => out.push(Token::Open),
            ')' => out.push(Token::Close),
            '=' | '!' => match chars.next() {
                Some((_, '=')) => out.push(if c == '=' { Token::Eq } else { Token::Ne }),
                _ => return Err(format!("unexpected {c:?} at {at}; did you mean \"{c}=\"?")),
            },
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("string opened at {at} is not closed")),
                        Some((_, '"')) => break,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, e @ ('"' | '\\'))) => s.push(e),
                            Some((_, 'n')) => s.push('\n'),
                            Some((_, 't')) => s.push('\t'),
                            _ => return Err(format!("unsupported escape in the string at {at}")),
                        },
                        Some((_, ch)) => s.push(ch),
                    }
                }
                out.push(Token::Quoted(s));
            }
            '`' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(format!("string opened at {at} is not closed")),
                        Some((_, '`')) => break,
                        Some((_, ch)) => s.push(ch),
                    }
                }
                out.push(Token::Quoted(s));
            }
            c if c.is_alphanumeric() || "_-.:/[]".contains(c) => {
                let mut s = c.to_string();
                while let Some(&(_, n)) = chars.peek() {
                    if n.is_alphanumeric() || "_-.:/[]".contains(n) {
                        s.push(n);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(Token::Word(s));
            }
            other => return Err(format!("unexpected {other:?} at {at}")),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Token>,
    at: usize,
    /// `not`s and parentheses open around the current point: bounded, so no filter can
    /// recurse the parser (or the evaluation, or the tree's drop) off the stack.
    depth: usize,
    /// Matches read so far: bounded, so a long `and` chain stays a small tree.
    matches: usize,
}

/// Most `not`s and parentheses nested in one filter.
const MAX_DEPTH: usize = 32;
/// Most comparisons in one filter.
const MAX_MATCHES: usize = 64;

const KEYWORDS: [&str; 8] = [
    "and", "or", "not", "in", "contains", "is", "empty", "matches",
];

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.at)
    }
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(x)) if x == w)
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.toks.get(self.at).cloned();
        self.at += 1;
        t
    }
    fn expect_word(&mut self, w: &str) -> Result<(), String> {
        match self.next() {
            Some(Token::Word(x)) if x == w => Ok(()),
            other => Err(format!(
                "expected \"{w}\", found {}",
                describe(other.as_ref())
            )),
        }
    }

    fn expr(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.next();
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.next();
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        let nests = self.peek_word("not") || self.peek() == Some(&Token::Open);
        if nests {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(format!("nested deeper than {MAX_DEPTH} (not, parentheses)"));
            }
        }
        let out = if self.peek_word("not") {
            self.next();
            Filter::Not(Box::new(self.unary()?))
        } else if self.peek() == Some(&Token::Open) {
            self.next();
            let inner = self.expr()?;
            match self.next() {
                Some(Token::Close) => inner,
                other => {
                    return Err(format!(
                        "expected \")\", found {}",
                        describe(other.as_ref())
                    ));
                }
            }
        } else {
            self.matches += 1;
            if self.matches > MAX_MATCHES {
                return Err(format!("more than {MAX_MATCHES} comparisons"));
            }
            self.matcher()?
        };
        if nests {
            self.depth -= 1;
        }
        Ok(out)
    }

    /// `selector op value`, `value [not] in selector`, `selector is [not] empty`.
    fn matcher(&mut self) -> Result<Filter, String> {
        let first = self.next();
        let first_text = match &first {
            Some(Token::Word(w)) if !KEYWORDS.contains(&w.as_str()) => w.clone(),
            Some(Token::Quoted(q)) => q.clone(),
            other => {
                return Err(format!(
                    "expected a selector or a value, found {}",
                    describe(other.as_ref())
                ));
            }
        };
        let quoted = matches!(first, Some(Token::Quoted(_)));
        // `value [not] in selector`
        let negated_in = self.peek_word("not")
            && matches!(self.toks.get(self.at + 1), Some(Token::Word(w)) if w == "in");
        if self.peek_word("in") || negated_in {
            if negated_in {
                self.next();
            }
            self.next();
            let sel = match self.next() {
                Some(Token::Word(w)) => Selector::parse(&w)?,
                other => {
                    return Err(format!(
                        "expected a selector after \"in\", found {}",
                        describe(other.as_ref())
                    ));
                }
            };
            let op = if negated_in {
                Op::NotContains
            } else {
                Op::Contains
            };
            return checked(sel, op, first_text);
        }
        if quoted {
            return Err(format!(
                "a quoted value {first_text:?} must be followed by \"in\" and a selector"
            ));
        }
        let sel = Selector::parse(&first_text)?;
        let op = match self.next() {
            Some(Token::Eq) => Op::Eq,
            Some(Token::Ne) => Op::Ne,
            Some(Token::Word(w)) if w == "contains" => Op::Contains,
            Some(Token::Word(w)) if w == "not" => {
                if self.peek_word("matches") {
                    return Err("\"matches\" (regular expressions) is not supported".into());
                }
                self.expect_word("contains")?;
                Op::NotContains
            }
            Some(Token::Word(w)) if w == "is" => {
                let not = self.peek_word("not");
                if not {
                    self.next();
                }
                self.expect_word("empty")?;
                return checked(
                    sel,
                    if not { Op::IsNotEmpty } else { Op::IsEmpty },
                    String::new(),
                );
            }
            Some(Token::Word(w)) if w == "matches" => {
                return Err("\"matches\" (regular expressions) is not supported".into());
            }
            other => {
                return Err(format!(
                    "expected ==, !=, contains, not contains or is [not] empty after {first_text:?}, found {}",
                    describe(other.as_ref())
                ));
            }
        };
        let value = match self.next() {
            Some(Token::Quoted(q)) => q,
            Some(Token::Word(w)) if !KEYWORDS.contains(&w.as_str()) => w,
            other => {
                return Err(format!(
                    "expected a value, found {}",
                    describe(other.as_ref())
                ));
            }
        };
        checked(sel, op, value)
    }
}

/// Refuses an operator the selector's type has no meaning for.
fn checked(sel: Selector, op: Op, value: String) -> Result<Filter, String> {
    if matches!(sel, Selector::Tags | Selector::Meta) && matches!(op, Op::Eq | Op::Ne) {
        return Err(format!(
            "{} is a collection: use contains, in or is empty, not == or !=",
            match sel {
                Selector::Tags => "Service.Tags",
                _ => "Service.Meta",
            }
        ));
    }
    Ok(Filter::Match(sel, op, value))
}

fn describe(t: Option<&Token>) -> String {
    match t {
        None => "the end".into(),
        Some(Token::Open) => "\"(\"".into(),
        Some(Token::Close) => "\")\"".into(),
        Some(Token::Eq) => "\"==\"".into(),
        Some(Token::Ne) => "\"!=\"".into(),
        Some(Token::Quoted(s)) | Some(Token::Word(s)) => format!("{s:?}"),
    }
}

impl Filter {
    /// Parses a filter; the error says what is wrong (the caller names the parameter).
    pub(crate) fn parse(src: &str) -> Result<Self, String> {
        let toks = tokens(src)?;
        if toks.is_empty() {
            return Err("empty expression".into());
        }
        let mut p = Parser {
            toks,
            at: 0,
            depth: 0,
            matches: 0,
        };
        let f = p.expr()?;
        if let Some(t) = p.peek() {
            return Err(format!(
                "unexpected {} after the expression",
                describe(Some(t))
            ));
        }
        Ok(f)
    }

    /// Whether `s` passes.
    pub(crate) fn matches(&self, s: &Subject<'_>) -> bool {
        match self {
            Filter::Or(a, b) => a.matches(s) || b.matches(s),
            Filter::And(a, b) => a.matches(s) && b.matches(s),
            Filter::Not(a) => !a.matches(s),
            Filter::Match(sel, op, v) => eval(sel, *op, v, s),
        }
    }
}

fn eval(sel: &Selector, op: Op, v: &str, s: &Subject<'_>) -> bool {
    let string = |text: &str, fold: bool| {
        let (text, v) = if fold {
            (text.to_ascii_lowercase(), v.to_ascii_lowercase())
        } else {
            (text.to_string(), v.to_string())
        };
        match op {
            Op::Eq => text == v,
            Op::Ne => text != v,
            Op::Contains => text.contains(&v),
            Op::NotContains => !text.contains(&v),
            Op::IsEmpty => text.is_empty(),
            Op::IsNotEmpty => !text.is_empty(),
        }
    };
    match sel {
        Selector::Name => string(s.name, true),
        Selector::Id => string(s.id, true),
        Selector::MetaKey(k) => string(s.meta.get(k).map_or("", String::as_str), false),
        Selector::Tags => {
            let has = || s.tags.iter().any(|t| t.eq_ignore_ascii_case(v));
            match op {
                Op::Contains => has(),
                Op::NotContains => !has(),
                Op::IsEmpty => s.tags.is_empty(),
                Op::IsNotEmpty => !s.tags.is_empty(),
                Op::Eq | Op::Ne => unreachable!("refused when parsed"),
            }
        }
        Selector::Meta => match op {
            Op::Contains => s.meta.contains_key(v),
            Op::NotContains => !s.meta.contains_key(v),
            Op::IsEmpty => s.meta.is_empty(),
            Op::IsNotEmpty => !s.meta.is_empty(),
            Op::Eq | Op::Ne => unreachable!("refused when parsed"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject<'a>(tags: &'a [&'a str], meta: &'a BTreeMap<String, String>) -> Subject<'a> {
        Subject {
            name: "web",
            id: "web-1",
            tags,
            meta,
        }
    }

    #[test]
    fn the_subset_evaluates_as_consul_does() {
        let mut meta = BTreeMap::new();
        meta.insert("version".to_string(), "2.1.0".to_string());
        meta.insert("zone".to_string(), "eu-1".to_string());
        let s = subject(&["v2", "canary"], &meta);
        let empty = BTreeMap::new();
        let bare = subject(&[], &empty);
        for (f, want, want_bare) in [
            ("\"v2\" in Service.Tags", true, false),
            ("Service.Tags contains \"canary\"", true, false),
            ("Service.Tags contains \"V2\"", true, false),
            ("\"v3\" not in ServiceTags", true, true),
            ("Tags not contains v2", false, true),
            ("Service.Meta.version == \"2.1.0\"", true, false),
            ("ServiceMeta.version != `2.1.0`", false, true),
            ("Service.Meta.zone contains \"eu\"", true, false),
            ("\"version\" in Service.Meta", true, false),
            ("Service.Meta is empty", false, true),
            ("Service.Tags is not empty", true, false),
            ("ServiceName == web", true, true),
            ("Service.Service == \"WEB\"", true, true),
            (
                "ServiceID == \"web-1\" and \"v2\" in Service.Tags",
                true,
                false,
            ),
            (
                "ServiceID == \"web-2\" or Service.Meta.zone == \"eu-1\"",
                true,
                false,
            ),
            ("not (ServiceID == \"web-1\")", false, false),
            (
                "not ServiceID == \"web-2\" and (Tags contains v2 or Tags contains x)",
                true,
                false,
            ),
            ("Service.Meta.missing == \"\"", true, true),
            ("Service.Meta.missing is empty", true, true),
        ] {
            let parsed = Filter::parse(f).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert_eq!(parsed.matches(&s), want, "{f}");
            assert_eq!(parsed.matches(&bare), want_bare, "{f} (bare)");
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let empty = BTreeMap::new();
        let s = subject(&[], &empty);
        // true or (false and false) = true; (true or false) and false would be false.
        let f = Filter::parse("ServiceName == web or ServiceID == x and ServiceID == y").unwrap();
        assert!(f.matches(&s));
    }

    #[test]
    fn the_rest_is_refused_with_a_reason() {
        for (f, says) in [
            ("", "empty"),
            ("Node.Meta.x == y", "not supported"),
            ("Checks.Status == passing", "not supported"),
            ("Service.Port == 80", "not supported"),
            ("ServiceName matches \"w.*\"", "matches"),
            ("ServiceName not matches \"w.*\"", "matches"),
            ("Service.Tags == v2", "collection"),
            ("ServiceName ==", "expected a value"),
            ("ServiceName = web", "did you mean"),
            ("(ServiceName == web", "expected \")\""),
            ("ServiceName == web)", "unexpected"),
            ("\"web\" == ServiceName", "must be followed by \"in\""),
            ("ServiceName == \"web", "not closed"),
            ("ServiceName == web and", "expected a selector"),
            ("ServiceName is full", "expected \"empty\""),
            ("ServiceName ~ web", "unexpected"),
            (
                &format!("{}ServiceName == web", "not ".repeat(40)),
                "nested deeper",
            ),
            (
                &format!("{}ServiceName == web{}", "(".repeat(5000), ")".repeat(5000)),
                "nested deeper",
            ),
            (
                &vec!["ServiceName == web"; 70].join(" and "),
                "more than 64",
            ),
        ] {
            let e = Filter::parse(f).expect_err(f);
            assert!(e.contains(says), "{f}: {e}");
        }
    }
}
