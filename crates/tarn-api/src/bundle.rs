//! Bundles: many small files in one request body, so that copying thousands of small files
//! costs a few requests instead of thousands. The format is a sequence of entries, each a
//! 4-byte big-endian header length, a JSON header `{"path", "size", "sha256"}`, then `size`
//! bytes; a zero header length ends it. The CLI and the server both use this module.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Files up to this size travel in bundles; larger ones stream on their own.
pub const SMALL_FILE: u64 = 1024 * 1024;
/// The most a bundle carries, in bytes of file content.
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024 * 1024;
/// The most files in one bundle.
pub const MAX_BUNDLE_FILES: usize = 512;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    pub path: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// Appends one entry.
pub fn put_entry(out: &mut BytesMut, header: &EntryHeader, data: &[u8]) {
    let json = serde_json::to_vec(header).expect("a header serialises");
    out.put_u32(json.len() as u32);
    out.put_slice(&json);
    out.put_slice(data);
}

/// Ends a bundle.
pub fn finish(out: &mut BytesMut) {
    out.put_u32(0);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed bundle: {0}")]
pub struct BundleError(pub String);

/// Splits a whole bundle into its entries.
pub fn parse(mut data: &[u8]) -> Result<Vec<(EntryHeader, Bytes)>, BundleError> {
    let bad = |why: &str| BundleError(why.to_string());
    let mut entries = vec![];
    loop {
        if data.len() < 4 {
            return Err(bad("it ends before its end marker"));
        }
        let len = u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        data = &data[4..];
        if len == 0 {
            return if data.is_empty() {
                Ok(entries)
            } else {
                Err(bad("data after the end marker"))
            };
        }
        if len > 64 * 1024 || data.len() < len {
            return Err(bad("an entry header is too long or cut short"));
        }
        let header: EntryHeader = serde_json::from_slice(&data[..len])
            .map_err(|e| BundleError(format!("an entry header is not valid JSON: {e}")))?;
        data = &data[len..];
        let size = usize::try_from(header.size).map_err(|_| bad("an entry is too large"))?;
        if data.len() < size {
            return Err(bad("an entry's data is cut short"));
        }
        entries.push((header, Bytes::copy_from_slice(&data[..size])));
        data = &data[size..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_round_trip_and_reject_damage() {
        let mut out = BytesMut::new();
        let a = EntryHeader {
            path: "a/b.txt".into(),
            size: 3,
            sha256: None,
        };
        let b = EntryHeader {
            path: "ü x.bin".into(),
            size: 0,
            sha256: Some("e3b0".into()),
        };
        put_entry(&mut out, &a, b"abc");
        put_entry(&mut out, &b, b"");
        finish(&mut out);
        let parsed = parse(&out).unwrap();
        assert_eq!(
            parsed,
            vec![(a, Bytes::from_static(b"abc")), (b, Bytes::new())]
        );
        assert!(
            parse(&out[..out.len() - 1]).is_err(),
            "a missing end marker is refused"
        );
        assert!(parse(&out[..10]).is_err(), "a cut header is refused");
        let mut lying = BytesMut::new();
        put_entry(
            &mut lying,
            &EntryHeader {
                path: "x".into(),
                size: 100,
                sha256: None,
            },
            b"short",
        );
        finish(&mut lying);
        assert!(
            parse(&lying).is_err(),
            "a size larger than the data is refused"
        );
    }
}
