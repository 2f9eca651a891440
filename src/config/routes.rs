//! The routes in file order, indexed by the first path segment they can match, so that finding
//! the first matching route of hundreds looks at the few that could match rather than all.
//!
//! A route whose first segment is fixed (`/svc12/...`, exact or prefix or pattern) is listed
//! under that segment, lower-cased (a case-sensitive route still compares exactly afterwards);
//! the others (`path_prefix = "/"`, `/{tenant}/...`, `/*`) can match any first segment and are
//! tried for every request. Candidates are tried in file order, so the first match in the file
//! still wins.

use std::collections::HashMap;
use std::ops::Deref;

use http::Method;

use super::compiled::{PathMatch, Route, Segment};

/// Segments longer than this are not indexed (their routes are tried for every path), so a
/// request's segment is lower-cased on the stack.
const MAX_INDEXED: usize = 128;

#[derive(Debug, Default)]
pub struct Routes {
    list: Vec<Route>,
    /// Lower-cased first segment -> indices of the routes that need it, ascending.
    by_first: HashMap<Box<[u8]>, Box<[usize]>, ahash::RandomState>,
    /// Routes that can match any first segment, ascending.
    any_first: Box<[usize]>,
}

impl Routes {
    pub(crate) fn new(list: Vec<Route>) -> Self {
        let mut by_first: HashMap<Box<[u8]>, Vec<usize>, ahash::RandomState> = HashMap::default();
        let mut any_first = Vec::new();
        for (i, route) in list.iter().enumerate() {
            match first_segment(&route.path) {
                Some(seg) if seg.len() <= MAX_INDEXED => by_first
                    .entry(seg.to_ascii_lowercase().into_bytes().into_boxed_slice())
                    .or_default()
                    .push(i),
                _ => any_first.push(i),
            }
        }
        Routes {
            list,
            by_first: by_first
                .into_iter()
                .map(|(k, v)| (k, v.into_boxed_slice()))
                .collect(),
            any_first: any_first.into_boxed_slice(),
        }
    }

    /// The first route in file order that could match the normalized `path` and satisfies
    /// `matches`.
    pub(crate) fn first<'r>(
        &'r self,
        path: &str,
        mut matches: impl FnMut(&'r Route) -> bool,
    ) -> Option<&'r Route> {
        let seg = path
            .get(1..)
            .map_or("", |p| p.split('/').next().unwrap_or(""))
            .as_bytes();
        let mut buf = [0u8; MAX_INDEXED];
        let indexed: &[usize] = match buf.get_mut(..seg.len()) {
            Some(lower) => {
                lower.copy_from_slice(seg);
                lower.make_ascii_lowercase();
                self.by_first.get(&*lower).map_or(&[], |v| v)
            }
            None => &[],
        };
        let (mut a, mut b) = (indexed.iter().peekable(), self.any_first.iter().peekable());
        loop {
            // Merge the two ascending lists: file order.
            let next = match (a.peek(), b.peek()) {
                (Some(&&x), Some(&&y)) if x < y => a.next(),
                (Some(_), Some(_)) | (None, Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, None) => return None,
            };
            let route = next.and_then(|&i| self.list.get(i))?;
            if matches(route) {
                return Some(route);
            }
        }
    }
}

/// `method` (any ASCII case) is in `listed` (upper-case, as config compiles it), or is `HEAD` and
/// `GET` is listed: frameworks dispatch `post` as POST and serve HEAD with the GET handler.
/// Request matching (`proxy::route`) and the shadowing check share it, so `check` reasons about
/// exactly the methods a route takes.
pub(crate) fn method_listed(listed: &[Method], method: &str) -> bool {
    let listed_as = |m: &str| listed.iter().any(|l| l.as_str().eq_ignore_ascii_case(m));
    listed_as(method) || (method.eq_ignore_ascii_case("HEAD") && listed_as("GET"))
}

/// The first segment every path the route matches starts with, if there is one.
fn first_segment(path: &PathMatch) -> Option<&str> {
    fn fixed(p: &str) -> Option<&str> {
        p.get(1..).and_then(|p| p.split('/').next())
    }
    match path {
        PathMatch::Exact(p) => fixed(p),
        PathMatch::Prefix(p) => {
            let base = p.trim_end_matches('/');
            if base.is_empty() {
                None
            } else {
                fixed(base)
            }
        }
        PathMatch::Pattern(p) => match p.segments.first() {
            Some(Segment::Literal(text)) => Some(text),
            // `/{id}/...` and `/*`: any first segment.
            Some(Segment::Param(_)) | None => None,
        },
    }
}

impl Deref for Routes {
    type Target = [Route];

    fn deref(&self) -> &[Route] {
        &self.list
    }
}

impl<'r> IntoIterator for &'r Routes {
    type Item = &'r Route;
    type IntoIter = std::slice::Iter<'r, Route>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}
