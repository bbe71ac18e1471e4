//! Conversions between the generated WIT types and the SDK's plain types.
//! Only compiled for Wasm; the decimal encoding is pure arithmetic and is
//! shared with the native tests through `decimal_parts`.

#[cfg(any(target_arch = "wasm32", test))]
use rust_decimal::Decimal;

#[cfg(any(target_arch = "wasm32", test))]
/// Splits a decimal into the WIT encoding: (mantissa-hi, mantissa-lo, scale).
pub fn decimal_parts(d: Decimal) -> (i64, u64, u8) {
    let m = d.mantissa();
    ((m >> 64) as i64, m as u64, d.scale() as u8)
}

#[cfg(any(target_arch = "wasm32", test))]
/// Rebuilds a decimal from the WIT encoding. The host only ever sends values
/// that came from a `Decimal`, so the range always fits.
pub fn decimal_from_parts(hi: i64, lo: u64, scale: u8) -> Decimal {
    let m = ((hi as i128) << 64) | lo as i128;
    Decimal::from_i128_with_scale(m, u32::from(scale))
}

#[cfg(target_arch = "wasm32")]
pub use wasm::*;

#[cfg(target_arch = "wasm32")]
mod wasm {
    use super::{decimal_from_parts, decimal_parts};
    use crate::types::ParamValue;
    use crate::wit::rulehost::rules::types as w;
    use crate::{Account, AccountStatus, Decimal, LogLevel, Timestamp};

    pub fn to_wit_decimal(d: Decimal) -> w::Decimal {
        let (mantissa_hi, mantissa_lo, scale) = decimal_parts(d);
        w::Decimal { mantissa_hi, mantissa_lo, scale }
    }

    pub fn from_wit_decimal(d: w::Decimal) -> Decimal {
        decimal_from_parts(d.mantissa_hi, d.mantissa_lo, d.scale)
    }

    fn from_wit_instant(i: w::Instant) -> Timestamp {
        Timestamp { seconds: i.seconds, nanos: i.nanos }
    }

    pub fn from_wit_param(v: w::ParamValue) -> ParamValue {
        match v {
            w::ParamValue::Text(s) => ParamValue::Text(s),
            w::ParamValue::Integer(i) => ParamValue::Integer(i),
            w::ParamValue::Decimal(d) => ParamValue::Decimal(from_wit_decimal(d)),
            w::ParamValue::TextList(l) => ParamValue::TextList(l),
        }
    }

    pub fn from_wit_account(a: w::AccountFacts) -> Account {
        Account {
            id: a.id,
            currency: a.currency,
            country: a.country,
            opened_at: from_wit_instant(a.opened_at),
            status: match a.status {
                w::AccountStatus::Active => AccountStatus::Active,
                w::AccountStatus::Frozen => AccountStatus::Frozen,
                w::AccountStatus::Closed => AccountStatus::Closed,
            },
            available: from_wit_decimal(a.available),
        }
    }

    pub fn to_wit_level(l: LogLevel) -> w::LogLevel {
        match l {
            LogLevel::Trace => w::LogLevel::Trace,
            LogLevel::Debug => w::LogLevel::Debug,
            LogLevel::Info => w::LogLevel::Info,
            LogLevel::Warn => w::LogLevel::Warn,
            LogLevel::Error => w::LogLevel::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn decimal_parts_round_trip_exactly() {
        for s in [
            "0",
            "-0.01",
            "125.505",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
            "0.0000000000000000000000000001",
        ] {
            let d = Decimal::from_str(s).unwrap();
            let (hi, lo, scale) = decimal_parts(d);
            let back = decimal_from_parts(hi, lo, scale);
            assert_eq!(back, d, "{s}");
            assert_eq!(back.scale(), d.scale(), "{s}");
        }
    }
}
