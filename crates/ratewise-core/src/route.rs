//! [`RouteTable`]: path templates and prefixes mapped to named buckets.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::key::Key;

/// Maps request paths to named buckets: path templates such as `/repos/{owner}/{repo}` and
/// prefixes such as `/search`, with a default bucket for everything else.
///
/// # Matching
///
/// Paths are compared segment by segment; empty segments (`//`, a trailing `/`) are ignored and
/// the query string is never looked at.
///
/// - A **template** matches a path with exactly as many segments; a `{name}` segment matches any
///   one segment, any other segment must be equal.
/// - A **prefix** matches a path whose first segments are the prefix's segments (`/search`
///   matches `/search` and `/search/code`, not `/searching`).
///
/// When several routes match, the **most specific** wins: the one with more literal (non-`{}`)
/// segments; on a tie a template beats a prefix; on a further tie the route added first wins.
/// Routes are sorted once when the table is built and indexed by their first segment:
/// matching splits the path once, on the stack, and tries in order only the routes that
/// can agree with its first segment (those starting with that literal or with a `{param}`),
/// stopping at the first match. It allocates nothing. (A table with a route of more than 15
/// segments is not indexed: every route is tried in order.)
///
/// ```
/// use ratewise_core::RouteTable;
///
/// let routes = RouteTable::builder()
///     .route("/repos/{owner}/{repo}", "repos")?
///     .prefix("/search", "search")?
///     .route("/graphql", "graphql")?
///     .default_bucket("core")
///     .build();
/// assert_eq!(routes.bucket("/repos/rust-lang/rust").as_str(), "repos");
/// assert_eq!(routes.bucket("/search/code").as_str(), "search");
/// assert_eq!(routes.bucket("/user").as_str(), "core");
/// # Ok::<(), ratewise_core::RouteError>(())
/// ```
///
/// # Clone
///
/// Cloning is one atomic increment: the routes are shared.
#[derive(Clone)]
pub struct RouteTable {
    inner: Arc<Inner>,
}

struct Inner {
    /// Sorted most specific first.
    routes: Vec<Route>,
    default: Key,
    /// The routes that can match a path, by its first segment; `None` when some route is
    /// longer than [`MAX_INDEXED_SEGMENTS`] (matching then scans every route).
    index: Option<Index>,
}

/// Most segments a route may have for the table to be indexed: matching splits the first
/// segments of a path into an array of this size plus one, on the stack.
const MAX_INDEXED_SEGMENTS: usize = 15;

/// First-segment tables of a [`RouteTable`] with more distinct first segments than this are
/// searched through a hash map rather than compared one by one.
const MAX_LINEAR_FIRST: usize = 8;

/// The candidates for a path, by its first segment: each list holds, in the table's order
/// (most specific first), the routes whose first segment is that literal and the routes whose
/// first segment is a `{param}` or that have no segment. Every candidate therefore agrees with
/// the path on its first segment, and matching starts at the second.
struct Index {
    /// The longest route, in segments: a path is split into at most one more.
    max_len: usize,
    /// Per distinct literal first segment: its candidates.
    by_first: Vec<(Literal, Box<[Candidate]>)>,
    /// Position in `by_first` of each literal, when there are too many to compare in turn.
    lookup: Option<HashMap<Box<[u8]>, usize, foldhash::fast::RandomState>>,
    /// The candidates of a path whose first segment is no route's literal (or that has none).
    others: Box<[Candidate]>,
}

/// A route as the index tries it: what is left to check once its first segment agrees.
struct Candidate {
    /// The number of segments of the route.
    len: usize,
    kind: Kind,
    /// The literal segments after the first, with their positions.
    literals: Box<[(usize, Literal)]>,
    bucket: Key,
}

/// A literal segment, with its first eight bytes packed in a word so that most comparisons
/// are of lengths and words.
struct Literal {
    bytes: Box<[u8]>,
    head: u64,
}

struct Route {
    pattern: String,
    segments: Vec<Segment>,
    kind: Kind,
    literals: usize,
    order: usize,
    bucket: Key,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Template,
    Prefix,
}

enum Segment {
    Literal(Box<[u8]>),
    Param,
}

impl RouteTable {
    /// Starts an empty table whose default bucket is `"default"`.
    pub fn builder() -> RouteTableBuilder {
        RouteTableBuilder {
            routes: Vec::new(),
            default: Key::new("default"),
        }
    }

    /// The bucket of `path`: the most specific matching route's, or the default bucket.
    pub fn bucket(&self, path: &str) -> &Key {
        self.matching(path).unwrap_or(&self.inner.default)
    }

    /// The bucket of the most specific route that matches `path`, or `None` when only the
    /// default applies.
    pub fn matching(&self, path: &str) -> Option<&Key> {
        let inner = &*self.inner;
        if inner.routes.is_empty() {
            return None;
        }
        let Some(index) = &inner.index else {
            return inner.scan(path);
        };
        // The path's first segments, up to one more than the longest route has: enough to
        // tell a template's length apart.
        let mut segments: [&[u8]; MAX_INDEXED_SEGMENTS + 1] = [&[]; MAX_INDEXED_SEGMENTS + 1];
        let count = split_segments(path.as_bytes(), &mut segments[..=index.max_len]);
        let candidates = match count {
            0 => &index.others,
            _ => index.candidates(segments[0]),
        };
        let segments = &segments[..count];
        candidates
            .iter()
            .find(|candidate| candidate.matches(segments))
            .map(|candidate| &candidate.bucket)
    }

    /// The default bucket.
    pub fn default_bucket(&self) -> &Key {
        &self.inner.default
    }

    /// Every bucket the table can return (each once), the default last.
    pub fn buckets(&self) -> Vec<Key> {
        let mut buckets: Vec<Key> = Vec::new();
        for route in &self.inner.routes {
            if !buckets.contains(&route.bucket) {
                buckets.push(route.bucket.clone());
            }
        }
        if !buckets.contains(&self.inner.default) {
            buckets.push(self.inner.default.clone());
        }
        buckets
    }
}

impl Default for RouteTable {
    /// A table with no routes: every path is in the bucket `"default"`.
    fn default() -> Self {
        RouteTable::builder().build()
    }
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for route in &self.inner.routes {
            let kind = match route.kind {
                Kind::Template => "",
                Kind::Prefix => " (prefix)",
            };
            map.entry(&format_args!("{}{kind}", route.pattern), &route.bucket);
        }
        map.entry(&"(default)", &self.inner.default);
        map.finish()
    }
}

impl Inner {
    /// Matching without the index: the first route, in the table's order, that matches.
    fn scan(&self, path: &str) -> Option<&Key> {
        self.routes
            .iter()
            .find(|route| route.matches(path))
            .map(|route| &route.bucket)
    }
}

/// Puts the first non-empty `/`-separated segments of `path` into `segments`, as many as fit;
/// returns how many it put. Finds the slashes eight bytes at a time.
#[inline]
fn split_segments<'a>(path: &'a [u8], segments: &mut [&'a [u8]]) -> usize {
    const LOW7: u64 = u64::from_le_bytes([0x7f; 8]);
    const SLASHES: u64 = u64::from_le_bytes([b'/'; 8]);
    let mut count = 0;
    let mut start = 0;
    // Ends the segment that started at `start` at `end`; false once `segments` is full.
    let mut end_at = |end: usize, start: &mut usize| {
        if end > *start
            && let (Some(slot), Some(segment)) = (segments.get_mut(count), path.get(*start..end))
        {
            *slot = segment;
            count += 1;
        }
        *start = end + 1;
        count < segments.len()
    };
    let mut words = path.chunks_exact(8);
    let mut base = 0;
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_le_bytes(bytes) ^ SLASHES;
        // The high bit of each byte that was a slash (exactly: no carry crosses bytes).
        let mut slashes = !(((x & LOW7) + LOW7) | x | LOW7);
        while slashes != 0 {
            let at = base + (slashes.trailing_zeros() / 8) as usize;
            if !end_at(at, &mut start) {
                return count;
            }
            slashes &= slashes - 1;
        }
        base += 8;
    }
    for (offset, &byte) in words.remainder().iter().enumerate() {
        if byte == b'/' && !end_at(base + offset, &mut start) {
            return count;
        }
    }
    end_at(path.len(), &mut start);
    count
}

impl Index {
    fn new(routes: &[Route]) -> Option<Index> {
        let max_len = routes.iter().map(|r| r.segments.len()).max().unwrap_or(0);
        if max_len > MAX_INDEXED_SEGMENTS {
            return None;
        }
        let first_literal = |route: &Route| match route.segments.first() {
            Some(Segment::Literal(literal)) => Some(literal.clone()),
            _ => None,
        };
        let candidates = |first: Option<&[u8]>| -> Box<[Candidate]> {
            routes
                .iter()
                .filter(|route| first_literal(route).is_none_or(|l| Some(&*l) == first))
                .map(Candidate::new)
                .collect()
        };
        let others = candidates(None);
        let mut by_first: Vec<(Literal, Box<[Candidate]>)> = Vec::new();
        for route in routes {
            if let Some(literal) = first_literal(route)
                && !by_first.iter().any(|(known, _)| known.bytes == literal)
            {
                by_first.push((Literal::new(&literal), candidates(Some(&literal))));
            }
        }
        let lookup = (by_first.len() > MAX_LINEAR_FIRST).then(|| {
            by_first
                .iter()
                .enumerate()
                .map(|(at, (literal, _))| (literal.bytes.clone(), at))
                .collect()
        });
        Some(Index {
            max_len,
            by_first,
            lookup,
            others,
        })
    }

    /// The candidates of a path whose first segment is `first`.
    #[inline]
    fn candidates(&self, first: &[u8]) -> &[Candidate] {
        let found = match &self.lookup {
            Some(lookup) => lookup.get(first).copied(),
            None => self
                .by_first
                .iter()
                .position(|(literal, _)| literal.matches(first)),
        };
        found.map_or(&self.others, |at| &self.by_first[at].1)
    }
}

impl Candidate {
    fn new(route: &Route) -> Candidate {
        let literals = route
            .segments
            .iter()
            .enumerate()
            .skip(1)
            .filter_map(|(at, segment)| match segment {
                Segment::Literal(literal) => Some((at, Literal::new(literal))),
                Segment::Param => None,
            })
            .collect();
        Candidate {
            len: route.segments.len(),
            kind: route.kind,
            literals,
            bucket: route.bucket.clone(),
        }
    }

    /// Whether the route matches a path split into `segments` (its non-empty segments, cut one
    /// past the longest route), for a route that the index offered as a candidate: the first
    /// segment is known to agree.
    #[inline]
    fn matches(&self, segments: &[&[u8]]) -> bool {
        let length_ok = match self.kind {
            Kind::Template => segments.len() == self.len,
            Kind::Prefix => segments.len() >= self.len,
        };
        length_ok
            && self.literals.iter().all(|(at, literal)| {
                segments
                    .get(*at)
                    .is_some_and(|segment| literal.matches(segment))
            })
    }
}

impl Literal {
    fn new(bytes: &[u8]) -> Literal {
        Literal {
            bytes: bytes.into(),
            head: pack(bytes),
        }
    }

    /// Whether `other` is this literal.
    #[inline]
    fn matches(&self, other: &[u8]) -> bool {
        self.bytes.len() == other.len()
            && self.head == pack(other)
            && (other.len() <= 8 || *self.bytes == *other)
    }
}

/// A word that tells apart any two byte strings of the same length up to eight bytes, and
/// holds the first eight bytes of longer ones: loads of the ends rather than a loop.
#[inline]
fn pack(bytes: &[u8]) -> u64 {
    let len = bytes.len();
    if let Some(head) = bytes.first_chunk::<8>() {
        u64::from_le_bytes(*head)
    } else if len >= 4 {
        // Two (overlapping) halves cover every byte.
        let word = |at: usize| {
            let mut half = [0; 4];
            half.copy_from_slice(&bytes[at..at + 4]);
            u64::from(u32::from_le_bytes(half))
        };
        word(0) | word(len - 4) << 32
    } else if len > 0 {
        // First, middle and last cover every byte of one to three.
        u64::from(bytes[0]) | u64::from(bytes[len / 2]) << 8 | u64::from(bytes[len - 1]) << 16
    } else {
        0
    }
}

impl Route {
    /// Whether the route matches `path`, splitting it anew: the reference the index must agree
    /// with, and the matcher of tables with routes too long to index.
    fn matches(&self, path: &str) -> bool {
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        for expected in &self.segments {
            match (segments.next(), expected) {
                (None, _) => return false,
                (Some(_), Segment::Param) => {}
                (Some(actual), Segment::Literal(literal)) => {
                    if actual.as_bytes() != &**literal {
                        return false;
                    }
                }
            }
        }
        match self.kind {
            Kind::Prefix => true,
            Kind::Template => segments.next().is_none(),
        }
    }
}

/// Builds a [`RouteTable`]; see there for the matching rules.
#[derive(Debug)]
pub struct RouteTableBuilder {
    routes: Vec<Route>,
    default: Key,
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("pattern", &self.pattern)
            .field("kind", &self.kind)
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl RouteTableBuilder {
    /// Adds a path template: literal segments and `{name}` segments, each `{name}` standing for
    /// exactly one segment (`/repos/{owner}/{repo}`).
    ///
    /// # Errors
    ///
    /// [`RouteError`] when the template does not start with `/`, has a segment that mixes
    /// braces with other text (`{id}.json`), or has an empty `{}`.
    pub fn route(self, template: &str, bucket: impl Into<Key>) -> Result<Self, RouteError> {
        self.push(template, Kind::Template, bucket.into())
    }

    /// Adds a prefix: every path whose first segments are these (`/search` matches
    /// `/search/code`). `{name}` segments are allowed here too.
    ///
    /// # Errors
    ///
    /// As for [`route`](Self::route).
    pub fn prefix(self, prefix: &str, bucket: impl Into<Key>) -> Result<Self, RouteError> {
        self.push(prefix, Kind::Prefix, bucket.into())
    }

    /// The bucket of paths that match no route [default `"default"`].
    pub fn default_bucket(mut self, bucket: impl Into<Key>) -> Self {
        self.default = bucket.into();
        self
    }

    /// Sorts the routes by specificity and freezes the table.
    pub fn build(mut self) -> RouteTable {
        self.routes.sort_by(|a, b| {
            b.literals
                .cmp(&a.literals)
                .then_with(|| {
                    let rank = |kind| u8::from(kind == Kind::Template);
                    rank(b.kind).cmp(&rank(a.kind))
                })
                .then_with(|| a.order.cmp(&b.order))
        });
        let index = Index::new(&self.routes);
        RouteTable {
            inner: Arc::new(Inner {
                routes: self.routes,
                default: self.default,
                index,
            }),
        }
    }

    fn push(mut self, pattern: &str, kind: Kind, bucket: Key) -> Result<Self, RouteError> {
        if !pattern.starts_with('/') {
            return Err(RouteError::new(pattern, "must start with '/'"));
        }
        let mut segments = Vec::new();
        for segment in pattern.split('/').filter(|s| !s.is_empty()) {
            let has_brace = segment.contains('{') || segment.contains('}');
            if !has_brace {
                segments.push(Segment::Literal(segment.as_bytes().into()));
                continue;
            }
            let name = segment
                .strip_prefix('{')
                .and_then(|rest| rest.strip_suffix('}'))
                .ok_or_else(|| {
                    RouteError::new(pattern, "a '{param}' must be a whole path segment")
                })?;
            if name.is_empty() || name.contains('{') || name.contains('}') {
                return Err(RouteError::new(pattern, "a '{param}' needs a plain name"));
            }
            segments.push(Segment::Param);
        }
        let literals = segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count();
        let order = self.routes.len();
        self.routes.push(Route {
            pattern: pattern.to_owned(),
            segments,
            kind,
            literals,
            order,
            bucket,
        });
        Ok(self)
    }
}

/// A path template or prefix that [`RouteTableBuilder`] cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    pattern: String,
    reason: &'static str,
}

impl RouteError {
    fn new(pattern: &str, reason: &'static str) -> Self {
        RouteError {
            pattern: pattern.to_owned(),
            reason,
        }
    }

    /// The rejected pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid route pattern {:?}: {}",
            self.pattern, self.reason
        )
    }
}

impl std::error::Error for RouteError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seed_table() -> RouteTable {
        RouteTable::builder()
            .route("/repos/{owner}/{repo}", "repos")
            .unwrap()
            .prefix("/search", "search")
            .unwrap()
            .route("/graphql", "graphql")
            .unwrap()
            .build()
    }

    #[test]
    fn templates_match_whole_paths_only() {
        let t = seed_table();
        assert_eq!(t.bucket("/repos/rust-lang/rust").as_str(), "repos");
        assert_eq!(t.bucket("/repos/rust-lang/rust/").as_str(), "repos");
        assert_eq!(t.bucket("/repos/rust-lang").as_str(), "default");
        assert_eq!(t.bucket("/repos/rust-lang/rust/issues").as_str(), "default");
        assert_eq!(t.bucket("/graphql").as_str(), "graphql");
        assert_eq!(t.bucket("/graphql/x").as_str(), "default");
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let t = seed_table();
        assert_eq!(t.bucket("/search").as_str(), "search");
        assert_eq!(t.bucket("/search/code").as_str(), "search");
        assert_eq!(t.bucket("//search//issues").as_str(), "search");
        assert_eq!(t.bucket("/searching").as_str(), "default");
        assert_eq!(t.bucket("/").as_str(), "default");
        assert_eq!(t.bucket("").as_str(), "default");
        assert!(t.matching("/user").is_none());
    }

    #[test]
    fn most_specific_route_wins() {
        let t = RouteTable::builder()
            .prefix("/repos", "repos-any")
            .unwrap()
            .route("/repos/{owner}/{repo}", "repo")
            .unwrap()
            .route("/repos/{owner}/{repo}/issues", "issues")
            .unwrap()
            .prefix("/repos/rust-lang/rust", "rust")
            .unwrap()
            .route("/repos/{owner}/special", "special")
            .unwrap()
            .route("/repos/{a}/{b}", "shadowed")
            .unwrap()
            .default_bucket("core")
            .build();
        // More literal segments beat fewer.
        assert_eq!(t.bucket("/repos/tokio-rs/tokio/issues").as_str(), "issues");
        assert_eq!(t.bucket("/repos/rust-lang/rust/pulls").as_str(), "rust");
        assert_eq!(t.bucket("/repos/rust-lang/rust").as_str(), "rust");
        assert_eq!(t.bucket("/repos/x/special").as_str(), "special");
        // Same literal count: a template beats a prefix, then the first added wins.
        assert_eq!(t.bucket("/repos/tokio-rs/tokio").as_str(), "repo");
        assert_eq!(t.bucket("/repos/tokio-rs").as_str(), "repos-any");
        assert_eq!(t.bucket("/elsewhere").as_str(), "core");
    }

    #[test]
    fn many_first_segments_and_long_routes() {
        let mut builder = RouteTable::builder()
            .route("/{any}/x", "param-first")
            .unwrap();
        for i in 0..12 {
            builder = builder.prefix(&format!("/p{i}"), format!("b{i}")).unwrap();
        }
        let t = builder.build();
        assert!(t.inner.index.as_ref().unwrap().lookup.is_some(), "hashed");
        assert_eq!(t.bucket("/p11/a/b").as_str(), "b11");
        assert_eq!(t.bucket("/p3").as_str(), "b3");
        assert_eq!(t.bucket("/p3/y").as_str(), "b3");
        // As many literals: the template beats the prefix.
        assert_eq!(t.bucket("/p3/x").as_str(), "param-first");
        assert_eq!(t.bucket("/q/x").as_str(), "param-first");
        assert_eq!(t.bucket("/p12").as_str(), "default");

        let long = format!("/{}", ["s"; MAX_INDEXED_SEGMENTS + 1].join("/"));
        let t = RouteTable::builder()
            .route(&long, "long")
            .unwrap()
            .prefix("/s", "short")
            .unwrap()
            .build();
        assert!(t.inner.index.is_none(), "too long to index");
        assert_eq!(t.bucket(&long).as_str(), "long");
        assert_eq!(t.bucket(&format!("{long}/s")).as_str(), "short");
    }

    #[test]
    fn bad_patterns_are_rejected() {
        let b = || RouteTable::builder();
        assert!(b().route("repos", "x").is_err());
        assert!(b().route("/repos/{id}.json", "x").is_err());
        assert!(b().route("/repos/{}", "x").is_err());
        assert!(b().prefix("/a/{b", "x").is_err());
        let err = b().route("/x/}{", "x").unwrap_err();
        assert_eq!(err.pattern(), "/x/}{");
        assert!(err.to_string().contains("invalid route pattern"));
    }

    #[test]
    fn buckets_lists_each_once() {
        let t = seed_table();
        let names: Vec<_> = t.buckets().iter().map(|k| k.as_str().to_owned()).collect();
        assert_eq!(names, ["repos", "graphql", "search", "default"]);
    }

    /// A naive model of the matching rules: every route that matches, compared by (literal
    /// segments, template over prefix, earlier added), written without the table's sorting.
    fn model_bucket(routes: &[(String, Kind, String)], default: &str, path: &str) -> String {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut best: Option<((usize, bool, std::cmp::Reverse<usize>), &str)> = None;
        for (order, (pattern, kind, bucket)) in routes.iter().enumerate() {
            let pattern: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
            let length_ok = match kind {
                Kind::Template => segments.len() == pattern.len(),
                Kind::Prefix => segments.len() >= pattern.len(),
            };
            let matches = length_ok
                && pattern
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.starts_with('{') || p == s);
            if !matches {
                continue;
            }
            let literals = pattern.iter().filter(|p| !p.starts_with('{')).count();
            let rank = (literals, *kind == Kind::Template, std::cmp::Reverse(order));
            if best.is_none_or(|(best, _)| rank > best) {
                best = Some((rank, bucket));
            }
        }
        best.map_or(default, |(_, bucket)| bucket).to_owned()
    }

    /// Patterns and paths over a tiny alphabet, so that overlaps and ties are frequent.
    fn pattern() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof!["a", "b", "c", "\\{p\\}"], 0..4)
            .prop_map(|segments| format!("/{}", segments.join("/")))
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(prop_oneof!["a", "b", "c", "d", ""], 0..5)
            .prop_map(|segments| format!("/{}", segments.join("/")))
    }

    /// Patterns over a wider alphabet (more first segments than are compared in turn, non-ASCII
    /// literals), sometimes longer than the index takes.
    fn wide_pattern() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            "[a-l]",
            Just("{p}".to_owned()),
            Just("é".to_owned()),
            Just("ab".to_owned()),
            "(abc|abd|bbc)(|d|e|de|def|defg|defgh|defghi)",
        ];
        prop_oneof![
            4 => prop::collection::vec(segment.clone(), 0..5),
            1 => prop::collection::vec(segment, 14..19),
        ]
        .prop_map(|segments| format!("/{}", segments.join("/")))
    }

    fn wide_path() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            "[a-m]",
            Just(String::new()),
            Just("é".to_owned()),
            Just("ab".to_owned()),
            "(abc|abd|bbc)(|d|e|de|def|defg|defgh|defghi)",
        ];
        prop_oneof![
            4 => prop::collection::vec(segment.clone(), 0..7),
            1 => prop::collection::vec(segment, 13..20),
        ]
        .prop_map(|segments| format!("/{}", segments.join("/")))
    }

    proptest! {
        /// Matching never panics, and a path always lands in some bucket of the table.
        #[test]
        fn any_path_gets_a_known_bucket(path in "\\PC{0,64}") {
            let t = seed_table();
            let bucket = t.bucket(&path).clone();
            prop_assert!(t.buckets().contains(&bucket));
        }

        /// The table picks the same bucket as the naive model, for any set of routes.
        #[test]
        fn precedence_matches_the_naive_model(
            routes in prop::collection::vec((pattern(), any::<bool>()), 0..8),
            paths in prop::collection::vec(path(), 1..16),
        ) {
            let routes: Vec<(String, Kind, String)> = routes
                .into_iter()
                .enumerate()
                .map(|(i, (pattern, template))| {
                    let kind = if template { Kind::Template } else { Kind::Prefix };
                    (pattern, kind, format!("r{i}"))
                })
                .collect();
            let mut builder = RouteTable::builder().default_bucket("fallback");
            for (pattern, kind, bucket) in &routes {
                builder = match kind {
                    Kind::Template => builder.route(pattern, bucket.as_str()),
                    Kind::Prefix => builder.prefix(pattern, bucket.as_str()),
                }
                .unwrap();
            }
            let table = builder.build();
            for path in &paths {
                prop_assert_eq!(
                    table.bucket(path).as_str(),
                    model_bucket(&routes, "fallback", path),
                    "path {:?} with {:?}", path, table
                );
            }
        }

        /// The index picks what trying every route in order picks (the matcher it replaced),
        /// whatever the routes, including tables with more distinct first segments than are
        /// compared in turn and tables too long to index, and whatever the path.
        #[test]
        fn the_index_agrees_with_trying_every_route(
            routes in prop::collection::vec((wide_pattern(), any::<bool>()), 0..24),
            paths in prop::collection::vec(
                prop_oneof![wide_path(), "\\PC{0,24}", "[/a-c]{0,24}"],
                1..24,
            ),
        ) {
            let mut builder = RouteTable::builder();
            for (i, (pattern, template)) in routes.iter().enumerate() {
                builder = if *template {
                    builder.route(pattern, format!("r{i}"))
                } else {
                    builder.prefix(pattern, format!("r{i}"))
                }
                .unwrap();
            }
            let table = builder.build();
            let longest = routes
                .iter()
                .map(|(p, _)| p.split('/').filter(|s| !s.is_empty()).count())
                .max()
                .unwrap_or(0);
            prop_assert_eq!(table.inner.index.is_some(), longest <= MAX_INDEXED_SEGMENTS);
            for path in &paths {
                prop_assert_eq!(
                    table.matching(path),
                    table.inner.scan(path),
                    "path {:?} with {:?}", path, table
                );
            }
        }

        /// Two byte strings of one length up to eight bytes are equal exactly when their packs
        /// are, and longer ones share the pack of their first eight bytes.
        #[test]
        fn pack_tells_equal_lengths_apart(
            a in proptest::collection::vec(0u8..4, 0..12),
            at in any::<prop::sample::Index>(),
            byte in 0u8..4,
        ) {
            // The same bytes but perhaps one.
            let mut b = a.clone();
            if !b.is_empty() {
                b[at.index(a.len())] = byte;
            }
            if a.len() <= 8 {
                prop_assert_eq!(pack(&a) == pack(&b), a == b);
            } else {
                prop_assert_eq!(pack(&a) == pack(&b), a[..8] == b[..8]);
            }
        }

        /// The word-at-a-time split finds the segments `split('/')` finds, up to the room.
        #[test]
        fn split_segments_agrees_with_split(
            path in proptest::collection::vec(
                prop_oneof![3 => Just(b'/'), 2 => 0u8..=255, 1 => Just(b'/' ^ 0x80)],
                0..48,
            ),
            room in 1usize..=MAX_INDEXED_SEGMENTS + 1,
        ) {
            let mut segments: [&[u8]; MAX_INDEXED_SEGMENTS + 1] = [&[]; MAX_INDEXED_SEGMENTS + 1];
            let count = split_segments(&path, &mut segments[..room]);
            let expected: Vec<&[u8]> = path
                .split(|&b| b == b'/')
                .filter(|s| !s.is_empty())
                .take(room)
                .collect();
            prop_assert_eq!(&segments[..count], &expected[..]);
        }

        /// A template with params matches exactly the paths with the same literals.
        #[test]
        fn template_params_match_any_segment(owner in "[a-z0-9-]{1,12}", repo in "[a-z0-9._-]{1,12}") {
            let t = seed_table();
            let path = format!("/repos/{owner}/{repo}");
            prop_assert_eq!(t.bucket(&path).as_str(), "repos");
        }
    }
}
