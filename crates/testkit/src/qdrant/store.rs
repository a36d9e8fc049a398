//! The in-memory collections both protocols share: points with one unnamed dense vector and a
//! JSON payload, and exact brute-force search.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::filter::Filter;

/// A point's payload: a JSON object.
pub(crate) type Payload = serde_json::Map<String, serde_json::Value>;

/// The most characters a collection name may have (Qdrant's limit).
const MAX_NAME_LEN: usize = 255;

/// How vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Distance {
    Cosine,
    Euclid,
    Dot,
    Manhattan,
}

impl Distance {
    /// The name Qdrant's REST API uses (`"Cosine"`, ...).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Cosine => "Cosine",
            Self::Euclid => "Euclid",
            Self::Dot => "Dot",
            Self::Manhattan => "Manhattan",
        }
    }

    /// Whether a larger score is a closer match (similarities), or a smaller one (distances).
    fn higher_is_better(self) -> bool {
        matches!(self, Self::Cosine | Self::Dot)
    }

    /// What Qdrant does to a vector before storing or searching with it: Cosine vectors are
    /// normalised to unit length, unless their squared length is (almost) zero or already
    /// within 1e-6 of one (Qdrant's `is_length_zero_or_normalized`); the others are kept.
    fn preprocess(self, vector: Vec<f32>) -> Vec<f32> {
        if self != Self::Cosine {
            return vector;
        }
        let length = simd_sum(Term::Square, &vector, &vector);
        if length < f32::EPSILON || (length - 1.0).abs() <= 1.0e-6 {
            return vector;
        }
        let length = length.sqrt();
        vector.into_iter().map(|x| x / length).collect()
    }

    /// The score Qdrant reports: the dot product for Cosine (on normalised vectors) and Dot,
    /// the Euclidean distance for Euclid, the L1 distance for Manhattan, each summed in the
    /// order Qdrant's kernels sum (see [`simd_sum`]).
    fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Self::Cosine | Self::Dot => simd_sum(Term::Product, a, b),
            Self::Euclid => simd_sum(Term::SquaredDifference, a, b).sqrt(),
            Self::Manhattan => simd_sum(Term::AbsoluteDifference, a, b),
        }
    }

    /// Whether `score` passes `threshold`: at least it for similarities, at most for distances.
    fn passes(self, score: f32, threshold: f32) -> bool {
        if self.higher_is_better() {
            score >= threshold
        } else {
            score <= threshold
        }
    }

    /// Orders `a` before `b` when it is the closer match.
    fn better_first(self, a: f32, b: f32) -> Ordering {
        let order = a.total_cmp(&b);
        if self.higher_is_better() {
            order.reverse()
        } else {
            order
        }
    }
}

/// What one pair of coordinates adds to a sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Term {
    /// `x * y` (dot product).
    Product,
    /// `x * x` (squared length; `y` is ignored).
    Square,
    /// `(x - y)^2` (Euclid).
    SquaredDifference,
    /// `|x - y|` (Manhattan).
    AbsoluteDifference,
}

impl Term {
    /// `acc + term(x, y)`, fused into one rounding when `fma` (as `_mm256_fmadd_ps` does).
    fn add(self, acc: f32, x: f32, y: f32, fma: bool) -> f32 {
        let (a, b) = match self {
            Self::Product => (x, y),
            Self::Square => (x, x),
            Self::SquaredDifference => (x - y, x - y),
            Self::AbsoluteDifference => return (x - y).abs() + acc,
        };
        if fma { a.mul_add(b, acc) } else { a * b + acc }
    }

    /// The term alone, as Qdrant's sequential loops compute it.
    fn value(self, x: f32, y: f32) -> f32 {
        match self {
            Self::Product => x * y,
            Self::Square => x * x,
            Self::SquaredDifference => (x - y) * (x - y),
            Self::AbsoluteDifference => (x - y).abs(),
        }
    }
}

/// The dimension from which Qdrant uses its SSE kernels, and its AVX+FMA ones.
const SSE_MIN_DIM: usize = 16;
const AVX_MIN_DIM: usize = 32;

/// A sum over coordinate pairs in exactly the order, and with the roundings, of Qdrant's
/// kernels on an x86_64 CPU with AVX and FMA, so that scores match bit for bit: below 16
/// dimensions a plain sequential sum; from 16 the SSE kernel (4 accumulators of 4 lanes over
/// blocks of 16, each reduced as `(l0 + l2) + (l1 + l3)`, then added in order, then the rest
/// sequentially); from 32 the AVX kernel (4 accumulators of 8 lanes over blocks of 32 with
/// fused multiply-adds, added as `(a + b) + (c + d)` lane-wise, then the halves, then pairwise).
fn simd_sum(term: Term, a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let tail = |from: usize, mut acc: f32| {
        for i in from..n {
            acc += term.value(a[i], b[i]);
        }
        acc
    };
    if n >= AVX_MIN_DIM {
        let m = n - n % 32;
        // Four accumulators of 8 lanes; accumulator k, lane j sums block offsets 8k + j.
        let mut acc = [[0.0f32; 8]; 4];
        for block in (0..m).step_by(32) {
            for (k, lanes) in acc.iter_mut().enumerate() {
                for (j, lane) in lanes.iter_mut().enumerate() {
                    let i = block + 8 * k + j;
                    *lane = term.add(*lane, a[i], b[i], term != Term::AbsoluteDifference);
                }
            }
        }
        let total: [f32; 8] =
            std::array::from_fn(|j| (acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j]));
        let lr: [f32; 4] = std::array::from_fn(|j| total[j + 4] + total[j]);
        tail(m, (lr[0] + lr[1]) + (lr[2] + lr[3]))
    } else if n >= SSE_MIN_DIM {
        let m = n - n % 16;
        let mut acc = [[0.0f32; 4]; 4];
        for block in (0..m).step_by(16) {
            for (k, lanes) in acc.iter_mut().enumerate() {
                for (j, lane) in lanes.iter_mut().enumerate() {
                    let i = block + 4 * k + j;
                    *lane = term.add(*lane, a[i], b[i], false);
                }
            }
        }
        let h = |x: [f32; 4]| (x[0] + x[2]) + (x[1] + x[3]);
        tail(m, ((h(acc[0]) + h(acc[1])) + h(acc[2])) + h(acc[3]))
    } else {
        // Rust's `Iterator::sum` of f32 starts from -0.0, which leaves the first term as it is.
        (0..n).map(|i| term.value(a[i], b[i])).sum()
    }
}

/// A point id: an unsigned integer or a UUID (kept in its lowercase hyphenated form). Integer ids
/// sort before UUIDs, as in Qdrant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum PointId {
    Num(u64),
    Uuid(String),
}

impl PointId {
    /// Parses a UUID in any of the forms Qdrant accepts (hyphenated, simple, `urn:uuid:`,
    /// braced) into its canonical lowercase hyphenated form.
    pub(crate) fn uuid(text: &str) -> Option<Self> {
        let trimmed = text.strip_prefix("urn:uuid:").unwrap_or(text);
        let trimmed = trimmed
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(trimmed);
        let hex: String = if trimmed.len() == 36 {
            let dashes_ok = trimmed
                .char_indices()
                .all(|(i, c)| matches!(i, 8 | 13 | 18 | 23) == (c == '-'));
            if !dashes_ok {
                return None;
            }
            trimmed.chars().filter(|c| *c != '-').collect()
        } else {
            trimmed.to_owned()
        };
        if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let hex = hex.to_ascii_lowercase();
        Some(Self::Uuid(format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )))
    }
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Num(n) => write!(f, "{n}"),
            Self::Uuid(u) => f.write_str(u),
        }
    }
}

/// Which payload keys a read returns (top-level keys only).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WithPayload {
    All,
    Nothing,
    Include(Vec<String>),
    Exclude(Vec<String>),
}

impl WithPayload {
    /// The payload to return, or `None` when none was asked for.
    pub(crate) fn apply(&self, payload: &Payload) -> Option<Payload> {
        let pick = |keep: &dyn Fn(&String) -> bool| {
            payload
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        match self {
            Self::All => Some(payload.clone()),
            Self::Nothing => None,
            Self::Include(keys) => Some(pick(&|k| keys.contains(k))),
            Self::Exclude(keys) => Some(pick(&|k| !keys.contains(k))),
        }
    }
}

/// A collection's vector configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VectorParams {
    pub(crate) size: usize,
    pub(crate) distance: Distance,
}

/// A stored point.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Point {
    pub(crate) id: PointId,
    /// The vector as stored (normalised for Cosine).
    pub(crate) vector: Vec<f32>,
    pub(crate) payload: Payload,
    /// The operation that last wrote the point.
    pub(crate) version: u64,
}

/// A point to upsert.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NewPoint {
    pub(crate) id: PointId,
    pub(crate) vector: Vec<f32>,
    pub(crate) payload: Payload,
}

/// Which points a delete removes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Selector {
    Ids(Vec<PointId>),
    Filter(Filter),
}

/// A nearest-neighbour search.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Search {
    pub(crate) vector: Vec<f32>,
    pub(crate) filter: Option<Filter>,
    pub(crate) limit: usize,
    pub(crate) offset: usize,
    pub(crate) score_threshold: Option<f32>,
}

/// What a collection looks like from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CollectionSummary {
    pub(crate) params: VectorParams,
    pub(crate) points_count: usize,
}

/// Why an operation was refused. `message()` is Qdrant's own text for the case.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StoreError {
    /// The collection does not exist.
    NotFound(String),
    /// A collection of that name exists already.
    AlreadyExists(String),
    /// A vector has the wrong number of dimensions.
    Dimension { expected: usize, got: usize },
    /// A named vector was used; the fixture's collections have only the unnamed one.
    VectorName(String),
    /// A single point asked for by id does not exist.
    PointNotFound(PointId),
    /// Input Qdrant reports as "Wrong input".
    BadInput(String),
    /// Input that fails validation (Qdrant answers 422 on REST).
    Validation(String),
    /// Valid Qdrant input that the fixture does not implement.
    Unsupported(String),
}

impl StoreError {
    /// The error text, as Qdrant words it.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::NotFound(name) => format!("Not found: Collection `{name}` doesn't exist!"),
            Self::AlreadyExists(name) => {
                format!("Wrong input: Collection `{name}` already exists!")
            }
            Self::Dimension { expected, got } => {
                format!("Wrong input: Vector dimension error: expected dim: {expected}, got {got}")
            }
            Self::VectorName(name) => {
                format!("Wrong input: Not existing vector name error: {name}")
            }
            Self::PointNotFound(id) => format!("Not found: Point with id {id} does not exists!"),
            Self::BadInput(what) => format!("Wrong input: {what}"),
            Self::Validation(what) => format!("Validation error: {what}"),
            Self::Unsupported(what) => {
                format!("Not implemented by the Qdrant fixture of citadel-itest: {what}")
            }
        }
    }
}

struct Collection {
    params: VectorParams,
    points: BTreeMap<PointId, Point>,
    /// The id of the last update operation (the first one gets 1, as recorded from Qdrant).
    last_operation: u64,
    /// Bytes of vector data written (4 per coordinate), Qdrant's `vector_io_write`.
    vector_bytes_written: u64,
}

impl Collection {
    fn check_dim(&self, vector: &[f32]) -> Result<(), StoreError> {
        if vector.len() == self.params.size {
            Ok(())
        } else {
            Err(StoreError::Dimension {
                expected: self.params.size,
                got: vector.len(),
            })
        }
    }

    fn next_operation(&mut self) -> u64 {
        self.last_operation += 1;
        self.last_operation
    }
}

/// Every collection, behind one lock.
#[derive(Default)]
pub(crate) struct Store {
    collections: RwLock<BTreeMap<String, Collection>>,
}

impl Store {
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Collection>> {
        // A panic while holding the lock cannot leave a collection half-written in a way that
        // matters to a test fixture, so a poisoned lock is used as it is.
        self.collections
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Collection>> {
        self.collections
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn with<T>(
        &self,
        name: &str,
        f: impl FnOnce(&Collection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let collections = self.read();
        let collection = collections
            .get(name)
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        f(collection)
    }

    fn with_mut<T>(
        &self,
        name: &str,
        f: impl FnOnce(&mut Collection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut collections = self.write();
        let collection = collections
            .get_mut(name)
            .ok_or_else(|| StoreError::NotFound(name.to_owned()))?;
        f(collection)
    }

    /// Creates an empty collection.
    pub(crate) fn create(&self, name: &str, params: VectorParams) -> Result<(), StoreError> {
        validate_name(name)?;
        if params.size == 0 {
            return Err(StoreError::Validation(
                "vectors.size: value 0 invalid, must be 1 or larger".into(),
            ));
        }
        let mut collections = self.write();
        if collections.contains_key(name) {
            return Err(StoreError::AlreadyExists(name.to_owned()));
        }
        collections.insert(
            name.to_owned(),
            Collection {
                params,
                points: BTreeMap::new(),
                last_operation: 0,
                vector_bytes_written: 0,
            },
        );
        Ok(())
    }

    /// Drops a collection; false when there was none (Qdrant answers `result: false` then).
    pub(crate) fn delete(&self, name: &str) -> bool {
        self.write().remove(name).is_some()
    }

    /// Whether the collection exists.
    pub(crate) fn exists(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// Every collection name, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// The collection's configuration and size.
    pub(crate) fn summary(&self, name: &str) -> Result<CollectionSummary, StoreError> {
        self.with(name, |c| {
            Ok(CollectionSummary {
                params: c.params,
                points_count: c.points.len(),
            })
        })
    }

    /// How many collections and stored vectors there are.
    pub(crate) fn totals(&self) -> (usize, usize) {
        let collections = self.read();
        let vectors = collections.values().map(|c| c.points.len()).sum();
        (collections.len(), vectors)
    }

    /// Each collection's name and the bytes of vector data written to it, by name.
    pub(crate) fn vector_bytes_written(&self) -> Vec<(String, u64)> {
        self.read()
            .iter()
            .map(|(name, c)| (name.clone(), c.vector_bytes_written))
            .collect()
    }

    /// Inserts or replaces points, all or none; returns the operation id.
    pub(crate) fn upsert(&self, name: &str, points: Vec<NewPoint>) -> Result<u64, StoreError> {
        self.with_mut(name, |c| {
            for point in &points {
                c.check_dim(&point.vector)?;
            }
            let version = c.next_operation();
            let distance = c.params.distance;
            let written = points.len().saturating_mul(c.params.size).saturating_mul(4);
            c.vector_bytes_written = c
                .vector_bytes_written
                .saturating_add(u64::try_from(written).unwrap_or(u64::MAX));
            for point in points {
                let stored = Point {
                    id: point.id.clone(),
                    vector: distance.preprocess(point.vector),
                    payload: point.payload,
                    version,
                };
                c.points.insert(point.id, stored);
            }
            Ok(version)
        })
    }

    /// Removes points; returns the operation id.
    pub(crate) fn delete_points(&self, name: &str, selector: &Selector) -> Result<u64, StoreError> {
        self.with_mut(name, |c| {
            match selector {
                Selector::Ids(ids) => {
                    for id in ids {
                        c.points.remove(id);
                    }
                }
                Selector::Filter(filter) => {
                    c.points.retain(|id, p| !filter.matches(id, &p.payload));
                }
            }
            Ok(c.next_operation())
        })
    }

    /// The points with these ids, in the order asked, each once, missing ones left out.
    pub(crate) fn get(&self, name: &str, ids: &[PointId]) -> Result<Vec<Point>, StoreError> {
        self.with(name, |c| {
            let mut seen = std::collections::HashSet::new();
            Ok(ids
                .iter()
                .filter(|id| seen.insert(*id))
                .filter_map(|id| c.points.get(id).cloned())
                .collect())
        })
    }

    /// How many points pass the filter.
    pub(crate) fn count(&self, name: &str, filter: Option<&Filter>) -> Result<usize, StoreError> {
        self.with(name, |c| {
            Ok(c.points
                .values()
                .filter(|p| filter.is_none_or(|f| f.matches(&p.id, &p.payload)))
                .count())
        })
    }

    /// Up to `limit` points passing the filter, in id order from `offset` on, and the id to
    /// continue from when there are more.
    pub(crate) fn scroll(
        &self,
        name: &str,
        filter: Option<&Filter>,
        offset: Option<&PointId>,
        limit: usize,
    ) -> Result<(Vec<Point>, Option<PointId>), StoreError> {
        self.with(name, |c| {
            let mut matching = c
                .points
                .values()
                .filter(|p| offset.is_none_or(|o| &p.id >= o))
                .filter(|p| filter.is_none_or(|f| f.matches(&p.id, &p.payload)));
            let page: Vec<Point> = matching.by_ref().take(limit).cloned().collect();
            let next = matching.next().map(|p| p.id.clone());
            Ok((page, next))
        })
    }

    /// Exact nearest neighbours: every point is scored, best first (ties by id).
    pub(crate) fn search(
        &self,
        name: &str,
        search: &Search,
    ) -> Result<Vec<(Point, f32)>, StoreError> {
        self.with(name, |c| {
            c.check_dim(&search.vector)?;
            let distance = c.params.distance;
            let query = distance.preprocess(search.vector.clone());
            let mut scored: Vec<(&Point, f32)> = c
                .points
                .values()
                .filter(|p| {
                    search
                        .filter
                        .as_ref()
                        .is_none_or(|f| f.matches(&p.id, &p.payload))
                })
                .map(|p| (p, distance.score(&query, &p.vector)))
                .filter(|(_, score)| {
                    search
                        .score_threshold
                        .is_none_or(|t| distance.passes(*score, t))
                })
                .collect();
            scored.sort_by(|(a, sa), (b, sb)| {
                distance
                    .better_first(*sa, *sb)
                    .then_with(|| a.id.cmp(&b.id))
            });
            Ok(scored
                .into_iter()
                .skip(search.offset)
                .take(search.limit)
                .map(|(p, score)| (p.clone(), score))
                .collect())
        })
    }
}

/// Qdrant's collection-name rule: 1 to 255 characters, none of `<>:"/\|?*` or NUL.
fn validate_name(name: &str) -> Result<(), StoreError> {
    let len = name.chars().count();
    if len == 0 || len > MAX_NAME_LEN {
        return Err(StoreError::Validation(format!(
            "collection_name: length must be between 1 and {MAX_NAME_LEN}"
        )));
    }
    if let Some(c) = name.chars().find(|c| "<>:\"/\\|?*\0".contains(*c)) {
        return Err(StoreError::Validation(format!(
            "collection_name: collection name cannot contain \"{c}\" char"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(size: usize, distance: Distance) -> VectorParams {
        VectorParams { size, distance }
    }

    fn point(id: u64, vector: Vec<f32>) -> NewPoint {
        NewPoint {
            id: PointId::Num(id),
            vector,
            payload: Payload::new(),
        }
    }

    fn search(vector: Vec<f32>, limit: usize) -> Search {
        Search {
            vector,
            filter: None,
            limit,
            offset: 0,
            score_threshold: None,
        }
    }

    #[test]
    fn cosine_scores_match_the_recorded_qdrant_answer() {
        // The wire reference: query [1, 0.1, 0, 0] against [1, 0, 0, 0] and [0, 1, 0, 0]
        // scored 0.99503714 and 0.09950372 in a real Qdrant 1.18.3.
        let store = Store::default();
        store.create("w", params(4, Distance::Cosine)).unwrap();
        let op = store
            .upsert(
                "w",
                vec![
                    point(1, vec![1.0, 0.0, 0.0, 0.0]),
                    point(2, vec![0.0, 1.0, 0.0, 0.0]),
                ],
            )
            .unwrap();
        assert_eq!(op, 1);
        let hits = store
            .search("w", &search(vec![1.0, 0.1, 0.0, 0.0], 10))
            .unwrap();
        let scores: Vec<String> = hits
            .iter()
            .map(|(_, s)| serde_json::to_string(s).unwrap())
            .collect();
        assert_eq!(scores, ["0.99503714", "0.09950372"]);
        assert_eq!(hits[0].0.version, 1);
    }

    #[test]
    fn distances_order_and_threshold() {
        let store = Store::default();
        for (name, distance) in [("e", Distance::Euclid), ("m", Distance::Manhattan)] {
            store.create(name, params(2, distance)).unwrap();
            store
                .upsert(
                    name,
                    vec![
                        point(1, vec![0.0, 0.0]),
                        point(2, vec![3.0, 4.0]),
                        point(3, vec![1.0, 0.0]),
                    ],
                )
                .unwrap();
            let hits = store.search(name, &search(vec![0.0, 0.0], 3)).unwrap();
            let ids: Vec<_> = hits.iter().map(|(p, _)| p.id.clone()).collect();
            assert_eq!(ids, [PointId::Num(1), PointId::Num(3), PointId::Num(2)]);
            let mut s = search(vec![0.0, 0.0], 3);
            s.score_threshold = Some(1.0);
            assert_eq!(store.search(name, &s).unwrap().len(), 2);
        }
        let hits = store.search("e", &search(vec![0.0, 0.0], 3)).unwrap();
        assert_eq!(hits[2].1, 5.0);
        let hits = store.search("m", &search(vec![0.0, 0.0], 3)).unwrap();
        assert_eq!(hits[2].1, 7.0);
    }

    #[test]
    fn errors_carry_qdrant_wording() {
        let store = Store::default();
        store.create("w", params(4, Distance::Dot)).unwrap();
        let err = store.create("w", params(4, Distance::Dot)).unwrap_err();
        assert_eq!(err.message(), "Wrong input: Collection `w` already exists!");
        let err = store.upsert("w", vec![point(1, vec![1.0; 3])]).unwrap_err();
        assert_eq!(
            err.message(),
            "Wrong input: Vector dimension error: expected dim: 4, got 3"
        );
        let err = store.count("nope", None).unwrap_err();
        assert_eq!(err.message(), "Not found: Collection `nope` doesn't exist!");
        assert!(matches!(
            store.create("a/b", params(4, Distance::Dot)),
            Err(StoreError::Validation(_))
        ));
        assert!(!store.delete("nope"));
        assert!(store.delete("w"));
    }

    #[test]
    fn uuids_are_canonicalised() {
        let want = PointId::Uuid("550e8400-e29b-41d4-a716-446655440000".into());
        for text in [
            "550e8400-e29b-41d4-a716-446655440000",
            "550E8400E29B41D4A716446655440000",
            "urn:uuid:550e8400-e29b-41d4-a716-446655440000",
            "{550e8400-e29b-41d4-a716-446655440000}",
        ] {
            assert_eq!(PointId::uuid(text), Some(want.clone()), "{text}");
        }
        assert_eq!(PointId::uuid("not-a-uuid"), None);
        assert!(PointId::Num(u64::MAX) < want);
    }

    #[test]
    fn scroll_pages_in_id_order() {
        let store = Store::default();
        store.create("s", params(1, Distance::Dot)).unwrap();
        store
            .upsert("s", (1..=5).rev().map(|i| point(i, vec![1.0])).collect())
            .unwrap();
        let (page, next) = store.scroll("s", None, None, 2).unwrap();
        assert_eq!(
            page.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
            [PointId::Num(1), PointId::Num(2)]
        );
        assert_eq!(next, Some(PointId::Num(3)));
        let (page, next) = store.scroll("s", None, next.as_ref(), 10).unwrap();
        assert_eq!(page.len(), 3);
        assert_eq!(next, None);
    }

    #[test]
    fn unit_length_vectors_are_stored_as_given() {
        // Qdrant leaves a vector whose squared length is within 1e-6 of 1 as it is, so a
        // normalised vector scored against itself gives its own f32 dot product (0.99999994
        // for this one), not the 1.0000001 a second normalisation would give.
        let raw = [0.3f32, -0.5, 0.7, 0.1, 0.2, -0.3, 0.05, 0.15];
        let length = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
        let unit: Vec<f32> = raw.iter().map(|x| x / length).collect();
        assert_eq!(Distance::Cosine.preprocess(unit.clone()), unit);
        let normalised = Distance::Cosine.preprocess(raw.to_vec());
        assert_eq!(normalised, unit);
        let store = Store::default();
        store.create("u", params(8, Distance::Cosine)).unwrap();
        store.upsert("u", vec![point(1, unit.clone())]).unwrap();
        let hits = store.search("u", &search(unit.clone(), 1)).unwrap();
        let own: f32 = unit.iter().map(|x| x * x).sum();
        assert_eq!(hits[0].1.to_bits(), own.to_bits());
        assert_eq!(Distance::Cosine.preprocess(vec![0.0; 3]), vec![0.0; 3]);
    }

    #[test]
    fn long_vectors_sum_in_qdrant_kernel_order() {
        let a: Vec<f32> = (0..70)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let b: Vec<f32> = (0..70)
            .map(|i| ((i * 17 % 29) as f32 - 14.0) / 3.0)
            .collect();
        for n in [3, 15, 16, 20, 31, 32, 47, 64, 70] {
            let exact: f64 = a[..n]
                .iter()
                .zip(&b[..n])
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum();
            let got = simd_sum(Term::Product, &a[..n], &b[..n]);
            assert!(
                (f64::from(got) - exact).abs() < 1e-3,
                "{n}: {got} vs {exact}"
            );
        }
        // Below 16 dimensions: the plain sequential sum.
        let plain: f32 = a[..15].iter().zip(&b[..15]).map(|(x, y)| x * y).sum();
        assert_eq!(simd_sum(Term::Product, &a[..15], &b[..15]), plain);
    }
}
