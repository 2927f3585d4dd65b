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
    /// The master key, kept only to be wrapped for a backup ([`Vault::wrap_key`]).
    key: [u8; 32],
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
            Ok(text) => key_from_text(&text, &key_file.display().to_string())?,
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
        Vault::with_key(store, &key, &key_file.display().to_string()).await
    }

    /// Opens the vault for `store` with `key` (named `source` in errors): a key that does not
    /// open the store's vault is an error.
    pub async fn with_key(store: &dyn Store, key: &[u8], source: &str) -> Result<Vault> {
        let key: [u8; 32] = key
            .try_into()
            .map_err(|_| Error::Vault(format!("{source} does not hold a 32-byte key")))?;
        let vault = Vault {
            cipher: XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key"),
            key,
        };
        let sealed_check = vault.seal("", CHECK_KEY, CHECK_PLAINTEXT);
        let stored = store
            .init_meta(CHECK_KEY, &encode_row(&sealed_check))
            .await?;
        let opens = decode_row(CHECK_KEY, &stored).and_then(|row| vault.open_row("", &row).ok());
        if opens.as_deref() != Some(CHECK_PLAINTEXT) {
            return Err(Error::Vault(format!(
                "the key in {source} does not open this database's vault (wrong key file?)"
            )));
        }
        Ok(vault)
    }

    /// The master key sealed under a passphrase, for a backup: Argon2id stretches the
    /// passphrase (with a fresh salt) into a key for the vault's own AEAD.
    pub fn wrap_key(&self, passphrase: &str) -> Result<WrappedKey> {
        let params = KdfParams::default();
        let salt = random::<16>();
        let cipher = params.cipher(passphrase, &salt)?;
        let nonce = random::<24>();
        let ciphertext = cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &self.key,
                    aad: WRAP_AAD,
                },
            )
            .expect("encryption of an in-memory buffer cannot fail");
        Ok(WrappedKey {
            kdf: "argon2id".into(),
            kdf_params: params,
            salt: B64.encode(salt),
            cipher: "xchacha20poly1305".into(),
            nonce: B64.encode(nonce),
            ciphertext: B64.encode(ciphertext),
        })
    }

    /// The master key as a key file holds it (base64), for a restore to write.
    pub fn key_file_text(key: &[u8]) -> String {
        B64.encode(key)
    }
}

/// Bound into a wrapped key, so that no other ciphertext passes for one.
const WRAP_AAD: &[u8] = b"tarn-backup-vault-key";

/// Argon2id's cost: OWASP's recommended minimum (19 MiB, 2 passes) doubled in memory.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            memory_kib: 38 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    fn cipher(&self, passphrase: &str, salt: &[u8]) -> Result<XChaCha20Poly1305> {
        // Bounds, so that a tampered file cannot make a restore allocate without limit.
        if self.memory_kib > 4 * 1024 * 1024 || self.iterations > 100 || self.parallelism > 64 {
            return Err(Error::Vault(
                "the wrapped vault key asks for an unreasonable Argon2id cost".into(),
            ));
        }
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .map_err(|e| {
                    Error::Vault(format!("the wrapped vault key's Argon2id parameters: {e}"))
                })?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = [0u8; 32];
        argon
            .hash_password_into(passphrase.as_bytes(), salt, &mut key)
            .map_err(|e| Error::Vault(format!("cannot derive a key from the passphrase: {e}")))?;
        Ok(XChaCha20Poly1305::new_from_slice(&key).expect("32-byte key"))
    }
}

/// A vault master key sealed under a passphrase (a backup's `vault-key.json`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct WrappedKey {
    pub kdf: String,
    pub kdf_params: KdfParams,
    pub salt: String,
    pub cipher: String,
    pub nonce: String,
    pub ciphertext: String,
}

impl WrappedKey {
    /// The master key, if `passphrase` is the one it was wrapped with.
    pub fn unwrap_key(&self, passphrase: &str) -> Result<Vec<u8>> {
        if self.kdf != "argon2id" || self.cipher != "xchacha20poly1305" {
            return Err(Error::Vault(format!(
                "the vault key is wrapped with {} and {}, which this Tarn does not know",
                self.kdf, self.cipher
            )));
        }
        let malformed = || Error::Vault("the wrapped vault key is malformed".into());
        let salt = B64.decode(&self.salt).map_err(|_| malformed())?;
        let nonce: [u8; 24] = B64
            .decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(malformed)?;
        let ciphertext = B64.decode(&self.ciphertext).map_err(|_| malformed())?;
        let cipher = self.kdf_params.cipher(passphrase, &salt)?;
        cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &ciphertext,
                    aad: WRAP_AAD,
                },
            )
            .map_err(|_| {
                Error::Vault(
                    "the passphrase does not open the backup's vault key (wrong passphrase, or the file was changed)"
                        .into(),
                )
            })
    }
}

impl Vault {
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

/// The key a key file holds (32 bytes, base64); `source` names the file in the error.
pub fn key_from_text(text: &str, source: &str) -> Result<Vec<u8>> {
    B64.decode(text.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| Error::Vault(format!("{source} does not hold a 32-byte base64 key")))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_opens_with_its_passphrase_only() {
        let key = random::<32>();
        let vault = Vault {
            cipher: XChaCha20Poly1305::new_from_slice(&key).unwrap(),
            key,
        };
        let wrapped = vault.wrap_key("correct horse battery").unwrap();
        assert_eq!(wrapped.kdf, "argon2id");
        assert_eq!(
            wrapped.unwrap_key("correct horse battery").unwrap(),
            key.to_vec()
        );
        let wrong = wrapped.unwrap_key("correct horse batterY").unwrap_err();
        assert!(wrong.to_string().contains("passphrase"), "{wrong}");
        // A changed byte, or a cost raised beyond reason, is refused too.
        let mut tampered = wrapped.clone();
        tampered.ciphertext = B64.encode(vec![0u8; 48]);
        assert!(tampered.unwrap_key("correct horse battery").is_err());
        let mut costly = wrapped;
        costly.kdf_params.memory_kib = u32::MAX;
        let err = costly.unwrap_key("correct horse battery").unwrap_err();
        assert!(err.to_string().contains("unreasonable"), "{err}");
    }
}
