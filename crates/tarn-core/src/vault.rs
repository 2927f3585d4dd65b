//! The workspace vault: secrets encrypted with XChaCha20-Poly1305 under a master key that lives
//! outside the database (a 0600 key file under `TARN_HOME`, or a file the operator mounts).
//!
//! Each secret gets a fresh random 192-bit nonce per write and is bound to its workspace and
//! name as associated data, so a ciphertext copied to another row or workspace fails to open.
//! Only this module sees plaintext; nothing here logs.

use crate::error::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::path::Path;
use tarn_store::{SecretRow, Store};

const CHECK_KEY: &str = "vault.check";
const CHECK_PLAINTEXT: &[u8] = b"tarn vault key check";

pub struct Vault {
    cipher: XChaCha20Poly1305,
}

fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    buf
}

impl Vault {
    /// Opens the vault for `store` with the key in `key_file`, creating the key on first use.
    /// A missing key for a database that has one, or a wrong key, is an error, never garbage.
    pub async fn open(store: &dyn Store, key_file: &Path) -> Result<Vault> {
        let check = store.get_meta(CHECK_KEY).await?;
        let key = match std::fs::read_to_string(key_file) {
            Ok(text) => B64
                .decode(text.trim())
                .ok()
                .filter(|k| k.len() == 32)
                .ok_or_else(|| {
                    Error::Vault(format!(
                        "{} does not hold a 32-byte base64 key",
                        key_file.display()
                    ))
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && check.is_none() => {
                let key = random::<32>().to_vec();
                write_private(key_file, &B64.encode(&key)).map_err(Error::Io)?;
                key
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Vault(format!(
                    "the vault key file {} is missing, but this database holds secrets sealed with a key; restore the file (or point TARN_VAULT_KEY_FILE at it)",
                    key_file.display()
                )));
            }
            Err(e) => return Err(Error::Io(e)),
        };
        let vault = Vault {
            cipher: XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key"),
        };
        let sealed_check = vault.seal("", CHECK_KEY, CHECK_PLAINTEXT);
        let stored = store
            .init_meta(CHECK_KEY, &encode_row(&sealed_check))
            .await?;
        let opens = decode_row(CHECK_KEY, &stored).and_then(|row| vault.open_row("", &row).ok());
        if opens.as_deref() != Some(CHECK_PLAINTEXT) {
            return Err(Error::Vault(format!(
                "the key in {} does not open this database's vault (wrong key file?)",
                key_file.display()
            )));
        }
        Ok(vault)
    }

    /// Encrypts `plaintext` as secret `name` of workspace `workspace_id`.
    pub fn seal(&self, workspace_id: &str, name: &str, plaintext: &[u8]) -> SecretRow {
        let nonce = random::<24>();
        let aad = associated_data(workspace_id, name);
        let ciphertext = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("encryption of an in-memory buffer cannot fail");
        SecretRow {
            name: name.to_string(),
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// A server-wide secret (no workspace's) sealed as text, for the store's `meta` or a
    /// cookie: only a server with this vault's key opens it, and only under the same `name`.
    pub fn seal_text(&self, name: &str, plaintext: &[u8]) -> String {
        encode_row(&self.seal("", name, plaintext))
    }

    /// Opens what [`Vault::seal_text`] sealed under `name`.
    pub fn open_text(&self, name: &str, text: &str) -> Result<Vec<u8>> {
        let row = decode_row(name, text)
            .ok_or_else(|| Error::Vault(format!("secret {name} is not sealed text")))?;
        self.open_row("", &row)
    }

    /// Decrypts a stored secret; fails if it was tampered with or moved.
    pub fn open_row(&self, workspace_id: &str, row: &SecretRow) -> Result<Vec<u8>> {
        let nonce: [u8; 24] = row
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| Error::Vault(format!("secret {} has a malformed nonce", row.name)))?;
        let aad = associated_data(workspace_id, &row.name);
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &row.ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                Error::Vault(format!(
                    "secret {} does not decrypt (tampered with, or moved)",
                    row.name
                ))
            })
    }
}

fn associated_data(workspace_id: &str, name: &str) -> String {
    format!("tarn-vault\0{workspace_id}\0{name}")
}

fn encode_row(row: &SecretRow) -> String {
    format!("{}:{}", B64.encode(&row.nonce), B64.encode(&row.ciphertext))
}

fn decode_row(name: &str, text: &str) -> Option<SecretRow> {
    let (nonce, ciphertext) = text.split_once(':')?;
    Some(SecretRow {
        name: name.into(),
        nonce: B64.decode(nonce).ok()?,
        ciphertext: B64.decode(ciphertext).ok()?,
    })
}

/// Writes a file only its owner can read (mode 0600 from the moment it exists).
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
