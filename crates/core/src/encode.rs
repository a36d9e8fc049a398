//! Small encodings several testers need, written once: base64 (RFC 4648, with padding) in the
//! standard and the URL-safe alphabet.
//!
//! ```
//! use citadel_itest_core::encode::{base64, base64url};
//! assert_eq!(base64(b"foo?"), "Zm9vPw==");
//! assert_eq!(base64url(&[0xfb, 0xff]), "-_8=");
//! ```

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Standard base64 with padding (`+`, `/`).
pub fn base64(bytes: &[u8]) -> String {
    encode(bytes, STANDARD)
}

/// URL-safe base64 with padding (`-`, `_`), as the Pushgateway reads `<label>@base64` path
/// segments.
pub fn base64url(bytes: &[u8]) -> String {
    encode(bytes, URL_SAFE)
}

fn encode(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
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
    fn rfc4648_vectors() {
        for (input, std) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), std);
            assert_eq!(base64url(input.as_bytes()), std);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8=");
    }
}
