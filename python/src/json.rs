//! A Python `dict` transaction written to JSON text in one pass, so that it
//! is parsed by the same parser, with the same checks, as a line of a file.
//!
//! `str`, `int`, `bool`, `None`, lists, tuples and dicts map to JSON as
//! `json.dumps` would; a `decimal.Decimal` becomes a JSON string of its exact
//! digits (amounts are strings in the input format); a `float` becomes a
//! JSON number, which the parser then refuses wherever money is expected —
//! a float is never turned into an amount.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple, PyType};

use rulehost_core::input::{ErrorCode, InputError};

/// How deep a dict transaction may nest (the parser's own limit is lower;
/// this only keeps a self-referencing structure from recursing forever).
const DEPTH_MAX: usize = 64;

/// Where in the dict the writer is, for error messages (`metadata.channel`).
#[derive(Default)]
pub struct Path(Vec<String>);

impl Path {
    fn field(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| self.0.join("."))
    }
}

/// Why a dict could not be written.
pub enum Error {
    /// Python raised while reading it.
    Python(PyErr),
    /// A value JSON cannot hold, at `field`.
    Value { field: Option<String>, message: String },
}

impl From<PyErr> for Error {
    fn from(e: PyErr) -> Self {
        Error::Python(e)
    }
}

impl Error {
    /// As a Python exception: an `InputError` naming the field (line `line`).
    pub fn into_py(self, py: Python<'_>, line: u64) -> PyErr {
        match self {
            Error::Python(e) => e,
            Error::Value { field, message } => {
                let e =
                    InputError { line, id: None, code: ErrorCode::InvalidField, field: field.map(Into::into), message };
                match crate::input_error(py, &e) {
                    Ok(obj) => PyErr::from_value(obj),
                    Err(e) => e,
                }
            }
        }
    }
}

static DECIMAL: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Appends the JSON text of `value` to `out`.
pub fn write(value: &Bound<'_, PyAny>, out: &mut Vec<u8>, path: &mut Path) -> Result<(), Error> {
    let invalid = |path: &Path, message: String| Error::Value { field: path.field(), message };
    if path.0.len() > DEPTH_MAX {
        return Err(invalid(path, format!("nested deeper than {DEPTH_MAX} levels")));
    }
    if value.is_none() {
        out.extend_from_slice(b"null");
    } else if let Ok(s) = value.cast::<PyString>() {
        string(s.to_str()?, out);
    } else if let Ok(b) = value.cast::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
    } else if let Ok(i) = value.cast::<PyInt>() {
        out.extend_from_slice(i.str()?.to_str()?.as_bytes());
    } else if let Ok(f) = value.cast::<PyFloat>() {
        let v = f.value();
        if !v.is_finite() {
            return Err(invalid(path, format!("{v} is not a JSON number")));
        }
        out.extend_from_slice(f.repr()?.to_str()?.as_bytes());
    } else if let Ok(d) = value.cast::<PyDict>() {
        out.push(b'{');
        for (i, (k, v)) in d.iter().enumerate() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(invalid(path, format!("a key must be a str, not {}", k.get_type().name()?)));
            };
            let key = key.to_str()?;
            if i > 0 {
                out.push(b',');
            }
            string(key, out);
            out.push(b':');
            path.0.push(key.to_owned());
            write(&v, out, path)?;
            path.0.pop();
        }
        out.push(b'}');
    } else if value.cast::<PyList>().is_ok() || value.cast::<PyTuple>().is_ok() {
        out.push(b'[');
        for (i, item) in value.try_iter()?.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            path.0.push(i.to_string());
            write(&item?, out, path)?;
            path.0.pop();
        }
        out.push(b']');
    } else if value.is_instance(DECIMAL.import(value.py(), "decimal", "Decimal")?.as_any())? {
        let text = value.str()?;
        let text = text.to_str()?;
        if !text.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') {
            return Err(invalid(path, format!("Decimal({text}) is not a finite decimal in plain notation")));
        }
        string(text, out);
    } else {
        return Err(Error::Python(PyTypeError::new_err(format!(
            "{}: a {} cannot be written to JSON (use str, int, bool, None, Decimal, list or dict)",
            path.field().unwrap_or_else(|| "transaction".into()),
            value.get_type().name()?
        ))));
    }
    Ok(())
}

/// A JSON string literal.
fn string(s: &str, out: &mut Vec<u8>) {
    // Writing a str to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
