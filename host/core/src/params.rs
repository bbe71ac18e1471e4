//! Typed rule parameters: the manifest's TOML values checked against what the
//! rule declares, once, at load time.

// Input reaches this module (ARCHITECTURE.md, "No input reaches a panic"):
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![deny(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::collections::HashMap;
use std::str::FromStr;

use rust_decimal::Decimal;

/// The type of a parameter (mirrors the WIT `param-type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamType {
    /// A string.
    Text,
    /// A 64-bit integer.
    Integer,
    /// An exact decimal, written as a string (or an integer) in TOML.
    Decimal,
    /// A list of strings.
    TextList,
    /// A table of integers.
    IntegerMap,
    /// A table of decimals.
    DecimalMap,
    /// A table of strings.
    TextMap,
}

impl ParamType {
    /// The spelling used in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Text => "text",
            ParamType::Integer => "integer",
            ParamType::Decimal => "decimal",
            ParamType::TextList => "text-list",
            ParamType::IntegerMap => "integer-map",
            ParamType::DecimalMap => "decimal-map",
            ParamType::TextMap => "text-map",
        }
    }

    fn example(self) -> &'static str {
        match self {
            ParamType::Text => "\"value\"",
            ParamType::Integer => "42",
            ParamType::Decimal => "\"10000.00\"",
            ParamType::TextList => "[\"KP\", \"IR\"]",
            ParamType::IntegerMap => "{ USD = 2, JPY = 0 }",
            ParamType::DecimalMap => "{ USD = \"10000\", JPY = \"1500000\" }",
            ParamType::TextMap => "{ key = \"value\" }",
        }
    }
}

/// A typed parameter value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamValue {
    /// `text`.
    Text(String),
    /// `integer`.
    Integer(i64),
    /// `decimal`.
    Decimal(Decimal),
    /// `text-list`.
    TextList(Vec<String>),
    /// `integer-map`.
    IntegerMap(HashMap<String, i64>),
    /// `decimal-map`.
    DecimalMap(HashMap<String, Decimal>),
    /// `text-map`.
    TextMap(HashMap<String, String>),
}

/// A rule's parameters, exactly the declared ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    values: foldhash::HashMap<String, ParamValue>,
}

impl Params {
    /// A whole parameter.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    /// One entry of a map parameter, as a scalar value.
    pub fn entry(&self, name: &str, key: &str) -> Option<ParamValue> {
        match self.values.get(name)? {
            ParamValue::IntegerMap(m) => m.get(key).map(|v| ParamValue::Integer(*v)),
            ParamValue::DecimalMap(m) => m.get(key).map(|v| ParamValue::Decimal(*v)),
            ParamValue::TextMap(m) => m.get(key).map(|v| ParamValue::Text(v.clone())),
            _ => None,
        }
    }

    /// Builds the parameters of a rule from the manifest table (its own
    /// params over the shared ones) and the rule's declaration. Every
    /// declared parameter must be present with its type; an own parameter
    /// the rule does not declare is an unknown key.
    pub fn build(table: &toml::Table, own: &[String], declared: &[(String, ParamType)]) -> Result<Params, String> {
        for key in own {
            if !declared.iter().any(|(n, _)| n == key) {
                let known: Vec<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
                return Err(format!("unknown parameter `{key}` (the rule declares: [{}])", known.join(", ")));
            }
        }
        let mut values = foldhash::HashMap::default();
        for (name, ty) in declared {
            let Some(value) = table.get(name) else {
                return Err(format!(
                    "missing parameter `{name}` of type {}, e.g. `{name} = {}`",
                    ty.as_str(),
                    ty.example()
                ));
            };
            let typed = convert(value, *ty).map_err(|why| {
                format!("parameter `{name}` must be {} (e.g. `{name} = {}`): {why}", ty.as_str(), ty.example())
            })?;
            values.insert(name.clone(), typed);
        }
        Ok(Params { values })
    }
}

fn decimal(v: &toml::Value) -> Result<Decimal, String> {
    match v {
        toml::Value::String(s) => Decimal::from_str_exact(s).map_err(|e| format!("{s:?} is not a decimal: {e}")),
        toml::Value::Integer(i) => Ok(Decimal::from(*i)),
        toml::Value::Float(f) => Err(format!("{f} is a float; write decimals as strings, floats are inexact")),
        other => Err(format!("got {}", other.type_str())),
    }
}

fn table_of<T>(v: &toml::Value, f: impl Fn(&toml::Value) -> Result<T, String>) -> Result<HashMap<String, T>, String> {
    let toml::Value::Table(t) = v else {
        return Err(format!("got {}", v.type_str()));
    };
    t.iter().map(|(k, v)| f(v).map(|v| (k.clone(), v)).map_err(|e| format!("entry `{k}`: {e}"))).collect()
}

fn convert(v: &toml::Value, ty: ParamType) -> Result<ParamValue, String> {
    let text = |v: &toml::Value| v.as_str().map(str::to_owned).ok_or_else(|| format!("got {}", v.type_str()));
    let integer = |v: &toml::Value| v.as_integer().ok_or_else(|| format!("got {}", v.type_str()));
    Ok(match ty {
        ParamType::Text => ParamValue::Text(text(v)?),
        ParamType::Integer => ParamValue::Integer(integer(v)?),
        ParamType::Decimal => ParamValue::Decimal(decimal(v)?),
        ParamType::TextList => {
            let toml::Value::Array(a) = v else {
                return Err(format!("got {}", v.type_str()));
            };
            ParamValue::TextList(a.iter().map(text).collect::<Result<_, _>>()?)
        }
        ParamType::IntegerMap => ParamValue::IntegerMap(table_of(v, integer)?),
        ParamType::DecimalMap => ParamValue::DecimalMap(table_of(v, decimal)?),
        ParamType::TextMap => ParamValue::TextMap(table_of(v, text)?),
    })
}

impl FromStr for ParamType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "text" => ParamType::Text,
            "integer" => ParamType::Integer,
            "decimal" => ParamType::Decimal,
            "text-list" => ParamType::TextList,
            "integer-map" => ParamType::IntegerMap,
            "decimal-map" => ParamType::DecimalMap,
            "text-map" => ParamType::TextMap,
            _ => return Err(format!("unknown parameter type {s:?}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn typed_and_checked() {
        let declared = vec![("t".to_string(), ParamType::DecimalMap), ("l".to_string(), ParamType::TextList)];
        let ok = Params::build(&table("t = { USD = \"10000\", JPY = 5 }\nl = [\"a\"]"), &[], &declared).unwrap();
        assert_eq!(ok.entry("t", "USD"), Some(ParamValue::Decimal(Decimal::from(10000))));
        assert_eq!(ok.entry("t", "JPY"), Some(ParamValue::Decimal(Decimal::from(5))));
        assert_eq!(ok.entry("t", "EUR"), None);

        let missing = Params::build(&table("l = []"), &[], &declared).unwrap_err();
        assert!(missing.contains("missing parameter `t`"), "{missing}");
        let float = Params::build(&table("t = { USD = 1.5 }\nl = []"), &[], &declared).unwrap_err();
        assert!(float.contains("entry `USD`") && float.contains("float"), "{float}");
        let wrong = Params::build(&table("t = {}\nl = \"a\""), &[], &declared).unwrap_err();
        assert!(wrong.contains("`l` must be text-list"), "{wrong}");
        let unknown = Params::build(&table("t = {}\nl = []\nx = 1"), &["x".into()], &declared).unwrap_err();
        assert!(unknown.contains("unknown parameter `x`"), "{unknown}");
    }
}
