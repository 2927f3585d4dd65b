//! A statement assembled from pieces (a search's filters, a batch's rows), its values bound as
//! `$1, $2, ...`: the placeholders both databases read. sqlx's `QueryBuilder` writes `?` for
//! the `Any` driver, which PostgreSQL rejects.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, Arguments, AssertSqlSafe, Encode, Type};
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
