//! The few pieces of SQL that SQLite and PostgreSQL spell differently. Every other statement is
//! written once in the SQL both accept (`$n` placeholders, `ON CONFLICT (...) DO UPDATE`,
//! `COALESCE`, `substr`), so a query that needs none of these is a plain string literal and a
//! query that does is assembled here. The rules about what the data means (parameter
//! conflicts, metric encoding, latest-metric bookkeeping, sampling) never live here: see
//! `packed.rs` and `sql_tracking.rs`.

use tarn_spec::mlflow_search::Op;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The rows of a JSON array of strings bound as `param`: `x IN (<this>)`. One statement
    /// serves any number of values, so it is prepared once.
    pub fn text_list(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("SELECT value FROM json_each({param})"),
            Dialect::Postgres => format!("SELECT jsonb_array_elements_text({param}::jsonb)"),
        }
    }

    /// As [`Dialect::text_list`], for a JSON array of integers.
    pub fn int_list(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("SELECT value FROM json_each({param})"),
            Dialect::Postgres => {
                format!("SELECT jsonb_array_elements_text({param}::jsonb)::bigint")
            }
        }
    }

    /// One text value holding a JSON array with an item `[a, b, ...]` per row: `items` is the
    /// comma-separated list of item expressions. `[]` when there are no rows.
    pub fn json_rows(self, items: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_group_array(json_array({items}))"),
            Dialect::Postgres => {
                format!("COALESCE(json_agg(json_build_array({items})), '[]')::text")
            }
        }
    }

    /// The texts `item` gives for each row, one after the other with a record separator
    /// (U+001E) between them; NULL when there are no rows.
    pub fn text_rows(self, item: &str) -> String {
        match self {
            Dialect::Sqlite => format!("group_concat({item}, char(30))"),
            Dialect::Postgres => format!("string_agg({item}, chr(30))"),
        }
    }

    /// A JSON array of `item` for each row of `from` (the rest of a `SELECT`: `FROM … WHERE
    /// …`) in `order`, `[]` when there are none: a scalar subquery to nest among the items of
    /// [`Dialect::json_rows`].
    pub fn nested_rows(self, item: &str, from: &str, order: &str) -> String {
        match self {
            Dialect::Sqlite => format!("(SELECT json_group_array({item} ORDER BY {order}) {from})"),
            Dialect::Postgres => {
                format!("(SELECT COALESCE(json_agg({item} ORDER BY {order}), '[]'::json) {from})")
            }
        }
    }

    /// A JSON array of `items` (comma-separated expressions), to nest in a JSON value.
    pub fn array(self, items: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_array({items})"),
            Dialect::Postgres => format!("json_build_array({items})"),
        }
    }

    /// A text column holding JSON, as JSON, to nest in a JSON value.
    pub fn json_value(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json({column})"),
            Dialect::Postgres => format!("{column}::json"),
        }
    }

    /// A double as text that parses back to the same value (`packed::parse_real`).
    pub fn real_text(self, column: &str) -> String {
        match self {
            // `!` asks SQLite's printf for all 17 significant digits.
            Dialect::Sqlite => format!("printf('%!.17g', {column})"),
            // PostgreSQL 12+ prints the shortest text that reads back exactly.
            Dialect::Postgres => format!("{column}::text"),
        }
    }

    /// The text under top-level `key` of a JSON object stored as text, or NULL.
    pub fn json_text(self, column: &str, key: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.\"{key}\"')"),
            Dialect::Postgres => format!("({column}::jsonb ->> '{key}')"),
        }
    }

    /// Now, in ms since the epoch, on the database's clock: the one clock every server on a
    /// store shares, so a lease expires at the same moment for all of them.
    pub fn now_ms(self) -> &'static str {
        match self {
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    /// Whether `column` is a whole number written in decimal digits, and its value.
    pub fn digits(self, column: &str) -> (String, String) {
        match self {
            Dialect::Sqlite => (
                format!("{column} NOT GLOB '*[^0-9]*' AND {column} <> ''"),
                format!("CAST({column} AS INTEGER)"),
            ),
            Dialect::Postgres => (
                format!("{column} ~ '^[0-9]{{1,18}}$'"),
                format!("CAST({column} AS BIGINT)"),
            ),
        }
    }

    /// The value at a key of the JSON object of texts at `member` of the JSON object in
    /// `column`, NULL when absent: the SQL before and after the key's placeholder. Any key
    /// works, dots and quotes included (no JSON path is built from it).
    pub fn object_text(self, column: &str, member: &str) -> (String, &'static str) {
        match self {
            Dialect::Sqlite => (
                format!("(SELECT o.value FROM json_each({column}, '$.{member}') o WHERE o.key = "),
                ")",
            ),
            Dialect::Postgres => (format!("({column}::jsonb -> '{member}' ->> "), ")"),
        }
    }

    /// The SQL operator for a search comparison. MLflow's `LIKE` is case-sensitive and `ILIKE`
    /// is not; SQLite's `LIKE` ignores case, so there `LIKE` runs as `GLOB` (see
    /// [`Dialect::pattern`]) and `ILIKE` as `LIKE`.
    pub fn comparison(self, op: Op) -> &'static str {
        match (self, op) {
            (Dialect::Sqlite, Op::Like) => "GLOB",
            (Dialect::Sqlite, Op::ILike) => "LIKE",
            _ => op.as_str(),
        }
    }

    /// A `LIKE`/`ILIKE` pattern as this dialect's operator for `op` wants it.
    pub fn pattern(self, op: Op, pattern: &str) -> String {
        match self {
            Dialect::Sqlite if op == Op::Like => like_to_glob(pattern),
            Dialect::Sqlite => pattern.to_string(),
            // PostgreSQL's LIKE treats `\` as an escape; MLflow's patterns have none.
            Dialect::Postgres => pattern.replace('\\', "\\\\"),
        }
    }
}

/// A LIKE pattern as a GLOB pattern: `%` and `_` become `*` and `?`; GLOB's own wildcards are
/// bracketed so they match themselves.
fn like_to_glob(pattern: &str) -> String {
    let mut out = String::new();
    for c in pattern.chars() {
        match c {
            '%' => out.push('*'),
            '_' => out.push('?'),
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_keep_their_meaning() {
        assert_eq!(
            Dialect::Sqlite.pattern(Op::Like, "a%b_[*?"),
            "a*b?[[][*][?]"
        );
        assert_eq!(Dialect::Sqlite.pattern(Op::ILike, "a%b_"), "a%b_");
        assert_eq!(Dialect::Postgres.pattern(Op::Like, "a%b_\\"), "a%b_\\\\");
    }
}
