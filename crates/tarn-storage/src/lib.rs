//! `tarn-storage`: datastores as live storage. A datastore's spec (with its secrets, from the
//! vault) opens an [`object_store`] backend — a local directory, Azure Blob / ADLS Gen2, S3 or
//! GCS — and this crate streams objects in and out of it with integrity checks.
//!
//! Errors are classified (wrong credentials, missing container, unreachable endpoint, …) and
//! every message is scrubbed of the datastore's secret values before it leaves this crate.

mod backend;
mod errors;

pub use backend::{Datastore, Entry, Listing, ObjectInfo, open, percent_decode};
pub use errors::StorageError;

/// Objects at least this large are uploaded in parts, several at a time.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts of one object in flight at once.
pub const PART_CONCURRENCY: usize = 8;
/// The metadata key holding an object's SHA-256 (on backends with user metadata).
/// (Letters and digits only: Azure metadata names must be identifiers.)
pub const SHA256_METADATA: &str = "tarnsha256";
