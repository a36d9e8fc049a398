//! Seeded, deterministic "model output": hashing, a small PRNG, generated words, token counts and
//! embeddings.
//!
//! Nothing here depends on time or on the process: the same seed and the same input give the same
//! words and vectors on every run, on every backend, on every machine. Hashes are FNV-1a (64 bit)
//! and the generator is SplitMix64, both fully specified here, so the output never changes with
//! the Rust version.

use std::collections::BTreeMap;

/// FNV-1a 64-bit offset basis.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime.
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The vocabulary generated text is drawn from: short, plain, lowercase words.
const WORDS: [&str; 64] = [
    "the", "model", "answers", "with", "a", "short", "and", "steady", "stream", "of", "plain",
    "words", "that", "tests", "can", "count", "every", "token", "arrives", "on", "time", "from",
    "this", "fixture", "server", "while", "gateway", "routes", "requests", "to", "each", "backend",
    "vector", "search", "finds", "nearest", "points", "in", "space", "database", "rows", "record",
    "what", "happened", "metrics", "show", "latency", "under", "load", "faults", "break",
    "streams", "clients", "retry", "after", "waiting", "briefly", "then", "succeed", "again",
    "quietly", "logs", "keep", "history",
];

/// Hashes `parts` (each length-prefixed, so `["ab", "c"]` and `["a", "bc"]` differ) with `seed`.
pub(crate) fn hash_parts(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    };
    eat(&seed.to_le_bytes());
    for part in parts {
        eat(&(part.len() as u64).to_le_bytes());
        eat(part);
    }
    // One SplitMix64 finalisation round spreads FNV's weak low bits.
    Rng::new(h).next_u64()
}

/// SplitMix64: small, fast, and good enough for test data.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `count` generated tokens for the answer keyed by `key`: the first is a bare word, every later
/// one is a space and a word, so concatenating them gives the text and splitting the text on
/// whitespace gives back exactly `count` words.
pub(crate) fn tokens(key: u64, count: usize) -> Vec<String> {
    let mut rng = Rng::new(key);
    (0..count)
        .map(|i| {
            let word = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
            if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            }
        })
        .collect()
}

/// The fixture's token count for text: the number of whitespace-separated words.
pub(crate) fn count_tokens(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// The embedding of `text`: each lowercase alphanumeric word contributes a seeded pseudo-random
/// vector, the sum is L2-normalised. Texts that share words point in similar directions, the same
/// text always gives the same vector, and the result has unit norm. Text without any word is
/// hashed whole.
pub(crate) fn embedding(seed: u64, text: &str, dimension: usize) -> Vec<f32> {
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        *counts.entry(word.to_lowercase()).or_default() += 1;
    }
    if counts.is_empty() {
        counts.insert(text.to_owned(), 1);
    }
    let mut sum = vec![0f64; dimension];
    for (word, count) in &counts {
        let mut rng = Rng::new(hash_parts(seed, &[b"embedding", word.as_bytes()]));
        let weight = f64::from(*count);
        for value in &mut sum {
            *value += weight * (rng.next_f64() * 2.0 - 1.0);
        }
    }
    normalise(&sum)
}

/// `values / |values|` as `f32`; a zero vector (never produced in practice) becomes a unit axis.
pub(crate) fn normalise(values: &[f64]) -> Vec<f32> {
    let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        let mut unit = vec![0f32; values.len()];
        if let Some(first) = unit.first_mut() {
            *first = 1.0;
        }
        return unit;
    }
    values.iter().map(|v| (v / norm) as f32).collect()
}

/// Standard base64 (RFC 4648, with padding), for `encoding_format: "base64"` embeddings.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_deterministic_and_count_as_words() {
        let a = tokens(42, 16);
        assert_eq!(a, tokens(42, 16));
        assert_ne!(a, tokens(43, 16));
        assert_eq!(a.len(), 16);
        assert!(!a[0].starts_with(' '));
        assert!(a[1..].iter().all(|t| t.starts_with(' ')));
        assert_eq!(count_tokens(&a.concat()), 16);
        // A shorter answer is a prefix of the longer one.
        assert_eq!(tokens(42, 5), a[..5]);
    }

    #[test]
    fn hash_separates_parts() {
        assert_ne!(hash_parts(0, &[b"ab", b"c"]), hash_parts(0, &[b"a", b"bc"]));
        assert_ne!(hash_parts(0, &[b"x"]), hash_parts(1, &[b"x"]));
        assert_eq!(hash_parts(7, &[b"x"]), hash_parts(7, &[b"x"]));
    }

    #[test]
    fn embeddings_are_unit_deterministic_and_similar_for_shared_words() {
        let a = embedding(0, "the quick brown fox", 384);
        assert_eq!(a.len(), 384);
        let norm: f64 = a.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        assert_eq!(a, embedding(0, "The quick, brown fox!", 384));
        assert_ne!(a, embedding(1, "the quick brown fox", 384));
        let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(p, q)| p * q).sum::<f32>();
        let near = embedding(0, "the quick brown dog", 384);
        let far = embedding(0, "metrics under load", 384);
        assert!(dot(&a, &near) > dot(&a, &far) + 0.2);
        assert_eq!(embedding(0, "...", 8).len(), 8);
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn rng_is_uniform_enough() {
        let mut rng = Rng::new(1);
        let mean = (0..10_000).map(|_| rng.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }
}
