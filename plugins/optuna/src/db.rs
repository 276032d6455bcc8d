//! One SQL interface over SQLite (rusqlite) and PostgreSQL (postgres), so the study storage is written once.
//!
//! Statements use `$1, $2, …` placeholders in ascending order (rusqlite binds them by position too). Enum
//! columns (state, direction, value types) are written as SQL literals from a fixed set, never bound, so the
//! same text works for SQLite's VARCHAR columns and PostgreSQL's enum types. On PostgreSQL each parameter is
//! converted to the type the server infers for it (INTEGER columns take i32, TIMESTAMP columns a datetime).

use postgres::types::Type;

/// A parameter.
#[derive(Debug, Clone)]
pub enum P {
    I(i64),
    F(Option<f64>),
    S(String),
}

/// A column value.
#[derive(Debug, Clone)]
pub enum V {
    I(i64),
    F(f64),
    S(String),
    Null,
}

impl V {
    pub fn i(&self) -> i64 {
        match self {
            V::I(i) => *i,
            V::F(f) => *f as i64,
            _ => 0,
        }
    }
    pub fn f(&self) -> Option<f64> {
        match self {
            V::F(f) => Some(*f),
            V::I(i) => Some(*i as f64),
            _ => None,
        }
    }
    pub fn s(&self) -> String {
        match self {
            V::S(s) => s.clone(),
            V::I(i) => i.to_string(),
            V::F(f) => f.to_string(),
            V::Null => String::new(),
        }
    }
}

pub enum Db {
    Sqlite(rusqlite::Connection),
    Pg(Box<postgres::Client>),
}

/// The error with its causes: the postgres crate's own text is just "db error", and the server's reason (a
/// serialization failure, a unique violation under concurrent workers) is only in its source.
fn e(x: impl std::error::Error) -> String {
    let mut text = x.to_string();
    let mut cause = x.source();
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}

impl Db {
    pub fn is_pg(&self) -> bool {
        matches!(self, Db::Pg(_))
    }

    pub fn exec(&mut self, sql: &str, params: &[P]) -> Result<u64, String> {
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(sql).map_err(e)?;
                bind_sqlite(&mut st, params)?;
                st.raw_execute().map(|n| n as u64).map_err(e)
            }
            Db::Pg(c) => {
                let st = c.prepare(sql).map_err(e)?;
                let owned = pg_params(&st, params)?;
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = owned.iter().map(|b| b.as_ref() as &(dyn postgres::types::ToSql + Sync)).collect();
                c.execute(&st, &refs).map_err(e)
            }
        }
    }

    pub fn query(&mut self, sql: &str, params: &[P]) -> Result<Vec<Vec<V>>, String> {
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare_cached(sql).map_err(e)?;
                bind_sqlite(&mut st, params)?;
                let n = st.column_count();
                let mut rows = st.raw_query();
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(e)? {
                    let mut r = Vec::with_capacity(n);
                    for i in 0..n {
                        r.push(match row.get_ref(i).map_err(e)? {
                            rusqlite::types::ValueRef::Integer(v) => V::I(v),
                            rusqlite::types::ValueRef::Real(v) => V::F(v),
                            rusqlite::types::ValueRef::Text(t) => V::S(String::from_utf8_lossy(t).into_owned()),
                            rusqlite::types::ValueRef::Blob(b) => V::S(String::from_utf8_lossy(b).into_owned()),
                            rusqlite::types::ValueRef::Null => V::Null,
                        });
                    }
                    out.push(r);
                }
                Ok(out)
            }
            Db::Pg(c) => {
                let st = c.prepare(sql).map_err(e)?;
                let owned = pg_params(&st, params)?;
                let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = owned.iter().map(|b| b.as_ref() as &(dyn postgres::types::ToSql + Sync)).collect();
                let rows = c.query(&st, &refs).map_err(e)?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let mut r = Vec::with_capacity(row.len());
                    for (i, col) in row.columns().iter().enumerate() {
                        let t = col.type_();
                        r.push(if *t == Type::INT4 {
                            row.try_get::<_, Option<i32>>(i).map_err(e)?.map_or(V::Null, |v| V::I(v as i64))
                        } else if *t == Type::INT8 {
                            row.try_get::<_, Option<i64>>(i).map_err(e)?.map_or(V::Null, V::I)
                        } else if *t == Type::FLOAT8 {
                            row.try_get::<_, Option<f64>>(i).map_err(e)?.map_or(V::Null, V::F)
                        } else if *t == Type::TIMESTAMP {
                            row.try_get::<_, Option<chrono::NaiveDateTime>>(i)
                                .map_err(e)?
                                .map_or(V::Null, |d| V::S(d.format("%Y-%m-%d %H:%M:%S%.6f").to_string()))
                        } else {
                            // Text, varchar and the enum types (read as text through a cast-free path).
                            match row.try_get::<_, Option<String>>(i) {
                                Ok(v) => v.map_or(V::Null, V::S),
                                Err(_) => V::S(enum_text(&row, i)),
                            }
                        });
                    }
                    out.push(r);
                }
                Ok(out)
            }
        }
    }

    /// Runs `f` in a write transaction: SQLite `BEGIN IMMEDIATE` (one writer at a time), PostgreSQL `BEGIN`
    /// (callers lock the rows they count with `FOR UPDATE`). Rolled back on error.
    pub fn tx<T>(&mut self, f: impl FnOnce(&mut Db) -> Result<T, String>) -> Result<T, String> {
        let begin = if self.is_pg() { "BEGIN" } else { "BEGIN IMMEDIATE" };
        self.exec(begin, &[])?;
        match f(self) {
            Ok(v) => {
                self.exec("COMMIT", &[])?;
                Ok(v)
            }
            Err(err) => {
                let _ = self.exec("ROLLBACK", &[]);
                Err(err)
            }
        }
    }
}

fn bind_sqlite(st: &mut rusqlite::CachedStatement<'_>, params: &[P]) -> Result<(), String> {
    for (i, p) in params.iter().enumerate() {
        match p {
            P::I(v) => st.raw_bind_parameter(i + 1, v),
            P::F(v) => st.raw_bind_parameter(i + 1, v),
            P::S(v) => st.raw_bind_parameter(i + 1, v),
        }
        .map_err(e)?;
    }
    Ok(())
}

/// An enum column's label (the postgres crate reads enums only into types that declare them).
fn enum_text(row: &postgres::Row, i: usize) -> String {
    struct Label(String);
    impl<'a> postgres::types::FromSql<'a> for Label {
        fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
            Ok(Label(String::from_utf8_lossy(raw).into_owned()))
        }
        fn accepts(_: &Type) -> bool {
            true
        }
    }
    row.try_get::<_, Option<Label>>(i).ok().flatten().map(|l| l.0).unwrap_or_default()
}

fn pg_params(st: &postgres::Statement, params: &[P]) -> Result<Vec<Box<dyn postgres::types::ToSql + Sync>>, String> {
    let types = st.params();
    if types.len() != params.len() {
        return Err(format!("statement takes {} parameters, {} given", types.len(), params.len()));
    }
    let mut out: Vec<Box<dyn postgres::types::ToSql + Sync>> = Vec::with_capacity(params.len());
    for (t, p) in types.iter().zip(params) {
        out.push(match (p, t) {
            (P::I(v), t) if *t == Type::INT4 => Box::new(i32::try_from(*v).map_err(|_| format!("{v} does not fit an INTEGER column"))?),
            (P::I(v), t) if *t == Type::FLOAT8 => Box::new(*v as f64),
            (P::I(v), _) => Box::new(*v),
            (P::F(v), _) => Box::new(*v),
            (P::S(v), t) if *t == Type::TIMESTAMP => {
                Box::new(chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f").map_err(|err| format!("datetime {v:?}: {err}"))?)
            }
            (P::S(v), _) => Box::new(v.clone()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("db error")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_is_reported_with_its_cause() {
        let err = Outer(std::io::Error::other("duplicate key value violates unique constraint \"studies_study_name_key\""));
        assert_eq!(super::e(err), "db error: duplicate key value violates unique constraint \"studies_study_name_key\"");
    }
}
