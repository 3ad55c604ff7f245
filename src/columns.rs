//! Reading a query's result columns by name, whatever physical type
//! DataFusion chose (dictionary, view or plain strings; any integer width).
//!
//! Scorers declare their query's row once with [`row!`] and read typed rows
//! with [`rows`]; each column is converted once per batch by the per-kind
//! readers below (`text`, `time`, `float`, `int`, `bool`, `texts`), so a bad
//! column is reported as a [`ShapeError`] naming the query and the column.
//!
//! Passes over event columns read text through [`Text`] (dictionary values
//! by key, not per row) and intern it as [`Names`] ids.

use arrow::array::{Array, ArrayAccessor, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, TimeUnit, TimestampMillisecondType};
use hashbrown::HashMap;

/// A column missing from a query result, or not castable to what it must be.
#[derive(Debug, thiserror::Error)]
#[error("query {query}: column {column} is missing or is not {wanted}")]
pub struct ShapeError {
    pub query: String,
    pub column: String,
    pub wanted: &'static str,
}

fn cast(
    b: &RecordBatch,
    query: &str,
    name: &str,
    to: &DataType,
    wanted: &'static str,
) -> Result<arrow::array::ArrayRef, ShapeError> {
    let col = b.column_by_name(name).ok_or_else(|| shape(query, name, wanted))?;
    arrow::compute::cast(col, to).map_err(|_| shape(query, name, wanted))
}

fn shape(query: &str, name: &str, wanted: &'static str) -> ShapeError {
    ShapeError { query: query.into(), column: name.into(), wanted }
}

/// Kind `text`.
pub fn strings(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Option<String>>, ShapeError> {
    let col = b.column_by_name(name).ok_or_else(|| shape(query, name, "text"))?;
    // Strings, and dictionaries of strings, are read where they are: a cast
    // would copy every value once more before it is copied into its `String`.
    let (values, keys) = match col.as_any_dictionary_opt() {
        // Only null keys (which `normalized_keys` cannot map).
        Some(d) if d.values().is_empty() => return Ok(vec![None; col.len()]),
        Some(d) => (d.values().as_ref(), Some(d.normalized_keys())),
        None => (col.as_ref(), None),
    };
    // Row i's place in `values`; none where the row is null.
    let at = |i: usize| match &keys {
        Some(k) => col.is_valid(i).then(|| k[i]),
        None => Some(i),
    };
    fn owned<'a>(
        a: impl ArrayAccessor<Item = &'a str>,
        n: usize,
        at: impl Fn(usize) -> Option<usize>,
    ) -> Vec<Option<String>> {
        (0..n).map(|i| at(i).filter(|&j| a.is_valid(j)).map(|j| a.value(j).to_string())).collect()
    }
    Ok(match values.data_type() {
        DataType::Utf8 => owned(values.as_string::<i32>(), col.len(), at),
        DataType::LargeUtf8 => owned(values.as_string::<i64>(), col.len(), at),
        DataType::Utf8View => owned(values.as_string_view(), col.len(), at),
        _ => cast(b, query, name, &DataType::Utf8, "text")?
            .as_string::<i32>()
            .iter()
            .map(|v| v.map(str::to_string))
            .collect(),
    })
}

/// Kind `time`: milliseconds since the epoch.
pub fn times(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Option<i64>>, ShapeError> {
    let ms = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let a = cast(b, query, name, &ms, "a timestamp")?;
    Ok(a.as_primitive::<TimestampMillisecondType>().iter().collect())
}

/// Kind `float`.
pub fn floats(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Option<f64>>, ShapeError> {
    let a = cast(b, query, name, &DataType::Float64, "a number")?;
    Ok(a.as_primitive::<Float64Type>().iter().collect())
}

/// Kind `int`.
pub fn ints(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Option<i64>>, ShapeError> {
    let a = cast(b, query, name, &DataType::Int64, "an integer")?;
    Ok(a.as_primitive::<Int64Type>().iter().collect())
}

/// Kind `bool`.
pub fn bools(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Option<bool>>, ShapeError> {
    let a = cast(b, query, name, &DataType::Boolean, "a boolean")?;
    Ok(a.as_boolean().iter().collect())
}

/// Kind `texts`: a list-of-strings column (e.g. `array_agg(request_id)`); null lists are empty.
pub fn string_lists(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Vec<String>>, ShapeError> {
    let shape = || shape(query, name, "a list of text");
    let col = b.column_by_name(name).ok_or_else(shape)?;
    let item = match col.data_type() {
        DataType::List(f) | DataType::LargeList(f) => f.clone(),
        _ => return Err(shape()),
    };
    let to = DataType::List(std::sync::Arc::new(item.as_ref().clone().with_data_type(DataType::Utf8)));
    let a = arrow::compute::cast(col, &to).map_err(|_| shape())?;
    let list = a.as_list::<i32>();
    Ok((0..list.len())
        .map(|i| {
            if list.is_null(i) {
                return Vec::new();
            }
            let v = list.value(i);
            v.as_string::<i32>().iter().flatten().map(str::to_string).collect()
        })
        .collect())
}

/// A query row decoded from named columns; implemented by [`row!`].
pub trait FromRow: Sized {
    /// Every row of one batch, in order.
    fn read(b: &RecordBatch, query: &str) -> Result<Vec<Self>, ShapeError>;
}

/// Every row of a query result, in batch order, decoded one batch at a time
/// so only that batch's rows (and what the caller keeps) are held at once.
/// A batch with a bad column yields its error in place of its rows.
pub fn rows<'a, T: FromRow + 'a>(
    batches: &'a [RecordBatch],
    query: &'a str,
) -> impl Iterator<Item = Result<T, ShapeError>> + 'a {
    batches.iter().flat_map(move |b| {
        let (rows, err) = match T::read(b, query) {
            Ok(rows) => (rows, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        rows.into_iter().map(Ok).chain(err.map(Err))
    })
}

/// The Rust type a column kind decodes to (nulls kept as `None`; null lists empty).
#[doc(hidden)]
#[macro_export]
macro_rules! __column_type {
    (text) => { Option<String> };
    (time) => { Option<i64> };
    (float) => { Option<f64> };
    (int) => { Option<i64> };
    (bool) => { Option<bool> };
    (texts) => { Vec<String> };
}

/// The reader of a column kind.
#[doc(hidden)]
#[macro_export]
macro_rules! __column_reader {
    (text) => {
        $crate::columns::strings
    };
    (time) => {
        $crate::columns::times
    };
    (float) => {
        $crate::columns::floats
    };
    (int) => {
        $crate::columns::ints
    };
    (bool) => {
        $crate::columns::bools
    };
    (texts) => {
        $crate::columns::string_lists
    };
}

/// Declares a query's row: `field: kind` reads column `field`, and
/// `field: kind = NAME` reads column `NAME` (an expression giving a `&str`).
/// The struct gets a [`FromRow`] impl, read with [`rows`].
macro_rules! row {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($field:ident : $kind:ident $(= $col:expr)?),* $(,)? }) => {
        $(#[$m])*
        $vis struct $name {
            $($vis $field: $crate::__column_type!($kind),)*
        }
        impl $crate::columns::FromRow for $name {
            fn read(
                b: &arrow::array::RecordBatch,
                query: &str,
            ) -> Result<Vec<Self>, $crate::columns::ShapeError> {
                $(
                    #[allow(unused_variables)]
                    let col = stringify!($field);
                    $(let col = $col;)?
                    let mut $field = $crate::__column_reader!($kind)(b, query, col)?.into_iter();
                )*
                // Every column has num_rows values, so `next` never runs dry.
                Ok((0..b.num_rows()).map(|_| Self { $($field: $field.next().unwrap_or_default(),)* }).collect())
            }
        }
    };
}
pub(crate) use row;

/// A text column, read without converting each row: dictionary values by key, others cast once per batch.
pub(crate) enum Text<'a> {
    Dict(arrow::array::TypedDictionaryArray<'a, Int32Type, StringArray>),
    Plain(StringArray),
}

impl<'a> Text<'a> {
    pub(crate) fn of(a: &'a ArrayRef) -> Result<Text<'a>, arrow::error::ArrowError> {
        if let Some(d) = a.as_dictionary_opt::<Int32Type>()
            && let Some(t) = d.downcast_dict::<StringArray>()
        {
            return Ok(Text::Dict(t));
        }
        Ok(Text::Plain(arrow::compute::cast(a, &DataType::Utf8)?.as_string::<i32>().clone()))
    }

    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        match self {
            Text::Dict(d) => d.is_valid(i).then(|| d.value(i)),
            Text::Plain(p) => p.is_valid(i).then(|| p.value(i)),
        }
    }

    /// Each row's value as an id of `names` (`None` for null); a
    /// dictionary's values are interned once each, when a row first uses them.
    pub(crate) fn ids(&self, names: &mut Names) -> Vec<Option<u32>> {
        self.ids_by(|v| Some(names.id(v)))
    }

    /// Each row's value mapped by `id` (`None` for null): once per
    /// dictionary value a row uses, else once per row.
    pub(crate) fn ids_by<'s>(&'s self, mut id: impl FnMut(&'s str) -> Option<u32>) -> Vec<Option<u32>> {
        match self {
            Text::Dict(d) => {
                let (keys, values) = (d.keys(), d.values());
                let mut by_key: Vec<Option<Option<u32>>> = vec![None; values.len()];
                (0..keys.len())
                    .map(|i| {
                        let k = d.is_valid(i).then(|| keys.value(i) as usize)?;
                        *by_key[k].get_or_insert_with(|| id(values.value(k)))
                    })
                    .collect()
            }
            Text::Plain(p) => p.iter().map(|v| id(v?)).collect(),
        }
    }
}

/// Interned strings: a day's rows hold ids, not copies of their text.
#[derive(Default)]
pub(crate) struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    pub(crate) fn id(&mut self, s: &str) -> u32 {
        let names = &mut self.names;
        *self.ids.entry_ref(s).or_insert_with(|| {
            names.push(s.to_string());
            names.len() as u32 - 1
        })
    }

    pub(crate) fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{ArrayRef, DictionaryArray, Int32Array, ListBuilder, StringBuilder, TimestampMillisecondArray};
    use arrow::datatypes::Int32Type;
    use std::sync::Arc;

    row! {
        struct Seen {
            who: text,
            at: time,
            n: int,
            ids: texts,
            renamed: text = "who",
        }
    }

    fn batch(with_n: bool) -> RecordBatch {
        let who: DictionaryArray<Int32Type> = vec![Some("a"), None].into_iter().collect();
        let at = TimestampMillisecondArray::from(vec![Some(5), None]).with_timezone("UTC");
        let mut ids = ListBuilder::new(StringBuilder::new());
        ids.append_value([Some("r1"), Some("r2")]);
        ids.append_null();
        let mut cols: Vec<(&str, ArrayRef)> =
            vec![("who", Arc::new(who)), ("at", Arc::new(at)), ("ids", Arc::new(ids.finish()))];
        if with_n {
            cols.push(("n", Arc::new(Int32Array::from(vec![Some(7), None]))));
        }
        RecordBatch::try_from_iter(cols).unwrap()
    }

    #[test]
    fn rows_decode_dictionary_text_times_ints_and_lists_with_nulls() {
        let rows = rows::<Seen>(&[batch(true), batch(true)], "q").collect::<Result<Vec<_>, _>>().unwrap();
        assert_eq!(rows.len(), 4);
        let (a, b) = (&rows[2], &rows[3]);
        assert_eq!(
            (a.who.as_deref(), a.at, a.n, a.ids.clone()),
            (Some("a"), Some(5), Some(7), vec!["r1".into(), "r2".into()])
        );
        assert_eq!(a.renamed, a.who);
        assert_eq!((b.who.as_deref(), b.at, b.n, b.ids.len()), (None, None, None, 0));
    }

    #[test]
    fn a_missing_column_names_the_query_and_column() {
        let e = rows::<Seen>(&[batch(false)], "spend").find_map(Result::err).unwrap();
        assert_eq!((e.query.as_str(), e.column.as_str(), e.wanted), ("spend", "n", "an integer"));
    }

    #[test]
    fn text_reads_every_string_layout_and_casts_the_rest() {
        use arrow::array::{Int8Array, Int64Array, LargeStringArray, StringArray, StringViewArray};
        let expect = vec![Some("x".to_string()), None, Some("y".to_string()), None];
        let plain = StringArray::from(vec![Some("x"), None, Some("y"), None]);
        // Key 1 is a null value; the last row a null key.
        let values = StringViewArray::from(vec![Some("x"), None, Some("y")]);
        let keys = Int8Array::from(vec![Some(0), Some(1), Some(2), None]);
        let dict = DictionaryArray::try_new(keys, Arc::new(values)).unwrap();
        let cols: Vec<(&str, ArrayRef)> = vec![
            ("utf8", Arc::new(plain.clone())),
            ("large", Arc::new(LargeStringArray::from(vec![Some("x"), None, Some("y"), None]))),
            ("view", Arc::new(StringViewArray::from(vec![Some("x"), None, Some("y"), None]))),
            ("dict", Arc::new(dict)),
        ];
        let no_values =
            DictionaryArray::try_new(Int8Array::from(vec![None; 4]), Arc::new(StringArray::new_null(0))).unwrap();
        let b = RecordBatch::try_from_iter(cols).unwrap();
        let empty = RecordBatch::try_from_iter([("e", Arc::new(no_values) as ArrayRef)]).unwrap();
        assert_eq!(strings(&empty, "q", "e").unwrap(), vec![None; 4]);
        for name in ["utf8", "large", "view", "dict"] {
            assert_eq!(strings(&b, "q", name).unwrap(), expect, "{name}");
        }
        let n =
            RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![Some(7), None])) as ArrayRef)]).unwrap();
        assert_eq!(strings(&n, "q", "n").unwrap(), vec![Some("7".to_string()), None]);
    }
}
