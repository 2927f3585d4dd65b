//! Where a store lives, as `tarn up --store` and `tarn store migrate` name it: `sqlite:PATH`
//! (or `sqlite://PATH`) for a SQLite file, `postgres://user@host:port/db?sslmode=...` (or
//! `postgresql://`) for a PostgreSQL database. A PostgreSQL password never rides in the URL:
//! it would show in process lists, shell history and logs; libpq's `PGPASSWORD` and password
//! files (`~/.pgpass`, `PGPASSFILE`) carry it instead.

use crate::{Result, SqlStore};
use std::fmt;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Location {
    /// Reads a `--store` value; the error says what is wrong without repeating the value.
    pub fn parse(text: &str) -> std::result::Result<Location, String> {
        if let Some(path) = text
            .strip_prefix("sqlite://")
            .or_else(|| text.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err("a sqlite: store names a file: sqlite:/path/to/tarn.db".into());
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        let Some(rest) = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
        else {
            return Err("a store is sqlite:PATH or postgres://USER@HOST:PORT/DATABASE".into());
        };
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        let user_info = authority.rsplit_once('@').map(|(u, _)| u).unwrap_or("");
        let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
        if user_info.contains(':') || query.split('&').any(|p| p.starts_with("password=")) {
            return Err("the store URL carries a password: put it in PGPASSWORD or a password file (~/.pgpass, or the file PGPASSFILE names) instead, so it stays out of process lists and logs".into());
        }
        Ok(Location::Postgres(text.to_string()))
    }

    /// Opens the store here, creating or migrating its schema.
    pub async fn open(&self) -> Result<SqlStore> {
        match self {
            Location::Sqlite(path) => SqlStore::open_sqlite(path).await,
            Location::Postgres(url) => SqlStore::connect_postgres(url).await,
        }
    }
}

/// The location as a user may see it in messages and logs (it holds no password).
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            Location::Postgres(url) => f.write_str(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_are_read_and_passwords_refused() {
        assert_eq!(
            Location::parse("sqlite:///srv/tarn.db").unwrap(),
            Location::Sqlite("/srv/tarn.db".into())
        );
        assert_eq!(
            Location::parse("sqlite:rel.db").unwrap(),
            Location::Sqlite("rel.db".into())
        );
        let pg = "postgres://tarn@db.internal:5432/tarn?sslmode=verify-full";
        assert_eq!(Location::parse(pg).unwrap(), Location::Postgres(pg.into()));
        for secret in [
            "postgres://tarn:hunter2@db/tarn",
            "postgresql://db/tarn?sslmode=require&password=hunter2",
        ] {
            let err = Location::parse(secret).unwrap_err();
            assert!(err.contains("PGPASSWORD"), "{err}");
            assert!(
                !err.contains("hunter2"),
                "the password is not repeated: {err}"
            );
        }
        assert!(Location::parse("mysql://db/tarn").is_err());
        assert!(Location::parse("sqlite:").is_err());
    }
}
