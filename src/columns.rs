//! Reading a query's result columns by name, whatever physical type
//! DataFusion chose (dictionary, view or plain strings; any integer width).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType};

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
    let shape = || ShapeError { query: query.into(), column: name.into(), wanted };
    let col = b.column_by_name(name).ok_or_else(shape)?;
    arrow::compute::cast(col, to).map_err(|_| shape())
}

pub fn strings(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Option<String>>, ShapeError> {
    let a = cast(b, query, name, &DataType::Utf8, "text")?;
    Ok(a.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect())
}

pub fn times(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Option<i64>>, ShapeError> {
    let ms = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let a = cast(b, query, name, &ms, "a timestamp")?;
    Ok(a.as_primitive::<TimestampMillisecondType>().iter().collect())
}

pub fn floats(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Option<f64>>, ShapeError> {
    let a = cast(b, query, name, &DataType::Float64, "a number")?;
    Ok(a.as_primitive::<Float64Type>().iter().collect())
}

pub fn ints(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Option<i64>>, ShapeError> {
    let a = cast(b, query, name, &DataType::Int64, "an integer")?;
    Ok(a.as_primitive::<Int64Type>().iter().collect())
}

pub fn bools(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Option<bool>>, ShapeError> {
    let a = cast(b, query, name, &DataType::Boolean, "a boolean")?;
    Ok(a.as_boolean().iter().collect())
}

/// A list-of-strings column (e.g. `array_agg(request_id)`); null lists are empty.
pub fn string_lists(b: &RecordBatch, query: &str, name: &str) -> Result<Vec<Vec<String>>, ShapeError> {
    let shape = || ShapeError { query: query.into(), column: name.into(), wanted: "a list of text" };
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
