//! A statement assembled from pieces (a search's filters, a batch's rows), its values bound as
//! `$1, $2, ...`: the placeholders both databases read. sqlx's `QueryBuilder` writes `?` for
//! the `Any` driver, which PostgreSQL rejects.

use crate::dialect::Dialect;
use crate::sql::db;
use sqlx::any::AnyArguments;
use sqlx::any::AnyRow;
use sqlx::query::Query;
use sqlx::{Any, Arguments, AssertSqlSafe, Encode, Transaction, Type};
use std::fmt::Write;

#[derive(Default)]
pub(crate) struct Statement {
    sql: String,
    args: AnyArguments,
}

impl Statement {
    pub fn new(sql: impl Into<String>) -> Statement {
        Statement {
            sql: sql.into(),
            args: AnyArguments::default(),
        }
    }

    pub fn push(&mut self, sql: impl AsRef<str>) -> &mut Statement {
        self.sql.push_str(sql.as_ref());
        self
    }

    /// Appends ` LIMIT n` (0 when negative), as a number in the text, not a placeholder:
    /// SQLite looks at a bound limit when it plans a statement, so it plans it again at every
    /// run (`sqlite3Reprepare` was a twentieth of a trace search's time). A page size takes
    /// few values, each prepared once.
    pub fn limit(&mut self, n: i64) -> &mut Statement {
        self.push(format!(" LIMIT {}", n.max(0)))
    }

    /// Appends a placeholder for `value`.
    pub fn bind<'t, T>(&mut self, value: T) -> &mut Statement
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        self.args
            .add(value)
            .expect("strings, numbers and bytes always encode");
        let _ = write!(self.sql, "${}", self.args.len());
        self
    }

    /// Adds `value` and returns its placeholder (`$n`) without appending it: for a value the
    /// statement refers to more than once.
    pub fn placeholder<'t, T>(&mut self, value: T) -> String
    where
        T: Encode<'t, Any> + Type<Any>,
    {
        self.args
            .add(value)
            .expect("strings, numbers and bytes always encode");
        format!("${}", self.args.len())
    }

    /// Appends `$i, $j, ...` for each value.
    pub fn bind_all<'t, T, I>(&mut self, values: I) -> &mut Statement
    where
        T: Encode<'t, Any> + Type<Any>,
        I: IntoIterator<Item = T>,
    {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.bind(v);
        }
        self
    }

    pub fn build(self) -> Query<'static, Any, AnyArguments> {
        sqlx::query_with(AssertSqlSafe(self.sql), self.args)
    }

    /// As [`Statement::build`], not kept prepared on the connection: for statements whose
    /// values may be NULL doubles, which sqlx's `Any` driver sends to PostgreSQL typed as
    /// float4 (a statement prepared so would refuse a real double the next time).
    pub fn build_once(self) -> Query<'static, Any, AnyArguments> {
        self.build().persistent(false)
    }
}

/// Statements written together in one transaction. On SQLite they go as one multi-statement
/// text, their values numbered on across them: one trip to SQLite's worker thread instead of
/// one per statement, which is most of what a small write costs (perf, `benches/traces.sh`).
/// PostgreSQL's extended protocol takes one statement per message, so there they run one
/// after the other.
pub(crate) struct Batch {
    dialect: Dialect,
    done: Vec<Statement>,
    current: Statement,
}

impl Batch {
    pub fn new(dialect: Dialect) -> Batch {
        Batch {
            dialect,
            done: vec![],
            current: Statement::default(),
        }
    }

    /// Ends the statement being written (if any) and starts the next one.
    pub fn next(&mut self, sql: impl AsRef<str>) -> &mut Statement {
        if !self.current.sql.is_empty() {
            match self.dialect {
                Dialect::Sqlite => self.current.sql.push_str(";\n"),
                Dialect::Postgres => self.done.push(std::mem::take(&mut self.current)),
            }
        }
        self.current.push(sql)
    }

    /// Runs every statement.
    pub async fn execute(mut self, tx: &mut Transaction<'static, Any>) -> crate::Result<()> {
        self.done.push(self.current);
        for q in self.done {
            if !q.sql.is_empty() {
                q.build().execute(&mut **tx).await.map_err(db)?;
            }
        }
        Ok(())
    }

    /// Runs every statement in a transaction of its own on `pool` (a writer) and answers the
    /// rows they return. On SQLite the transaction's `BEGIN` and `COMMIT` go in the same text:
    /// sqlx's own `begin` and `commit` each wait for the caller to take the answer, two more
    /// trips. So that a caller that goes away (a client hanging up) never leaves it half done,
    /// it runs in a task of its own, which rolls back after an error, or drops the
    /// connection when even that fails.
    pub async fn commit(mut self, pool: &sqlx::AnyPool) -> crate::Result<Vec<AnyRow>> {
        if self.current.sql.is_empty() && self.done.is_empty() {
            return Ok(vec![]);
        }
        if self.dialect == Dialect::Postgres {
            let mut tx = pool.begin().await.map_err(db)?;
            self.done.push(self.current);
            let mut rows = vec![];
            for q in self.done {
                if !q.sql.is_empty() {
                    // Not kept prepared: a NULL double would fix its type (see `build_once`).
                    rows.extend(q.build_once().fetch_all(&mut *tx).await.map_err(db)?);
                }
            }
            tx.commit().await.map_err(db)?;
            return Ok(rows);
        }
        let mut conn = pool.acquire().await.map_err(db)?;
        let Statement { sql, args } = self.current;
        let sql = format!("BEGIN;\n{sql};\nCOMMIT");
        let run = tokio::spawn(async move {
            let done = sqlx::query_with(AssertSqlSafe(sql), args)
                .fetch_all(&mut *conn)
                .await;
            if done.is_err() && sqlx::query("ROLLBACK").execute(&mut *conn).await.is_err() {
                // No transaction was open (BEGIN itself failed), or the connection is
                // broken: either way a fresh one is safe.
                conn.close_on_drop();
            }
            done
        });
        match run.await {
            Ok(done) => done.map_err(db),
            Err(e) => Err(crate::StoreError::Database(sqlx::Error::Io(
                std::io::Error::other(e),
            ))),
        }
    }
}
