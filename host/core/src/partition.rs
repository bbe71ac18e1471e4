//! Partitions of source accounts: several hosts sharing one ledger each
//! decide the transactions of the partitions they own, so one host at a
//! time makes every debit of an account (its order and velocity stay exact).

use sha2::{Digest, Sha256};

/// How many partitions source accounts hash to. Fixed: changing it moves
/// accounts between partitions, so it is part of the stored format.
pub const PARTITIONS: u16 = 64;

/// The partition, `0..PARTITIONS`, of a source account: bytes 8..16 of
/// SHA-256 of its id, big-endian, modulo [`PARTITIONS`] (the canary's bucket
/// uses bytes 0..8 of the same digest, so the two are independent). The same
/// on every machine and in every release.
pub fn partition(source: &str) -> u16 {
    let digest = Sha256::digest(source.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[8..16]);
    // The remainder is below PARTITIONS, so it fits a u16.
    (u64::from_be_bytes(bytes) % u64::from(PARTITIONS)) as u16
}

/// Parses a partition set: `all`, or comma-separated numbers and inclusive
/// ranges (`0-15,32,40-47`), each below [`PARTITIONS`]. Returns them sorted,
/// without repeats; the error names the part that is wrong.
pub fn parse_partitions(spec: &str) -> Result<Vec<u16>, String> {
    if spec.trim() == "all" {
        return Ok((0..PARTITIONS).collect());
    }
    let number = |s: &str| -> Result<u16, String> {
        let n: u16 =
            s.trim().parse().map_err(|_| format!("{s:?} is not a partition number (0 to {})", PARTITIONS - 1))?;
        if n >= PARTITIONS {
            return Err(format!("partition {n} does not exist: there are {PARTITIONS} (0 to {})", PARTITIONS - 1));
        }
        Ok(n)
    };
    let mut out = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((from, to)) => {
                let (from, to) = (number(from)?, number(to)?);
                if from > to {
                    return Err(format!("range {part:?} is empty (it must go up)"));
                }
                out.extend(from..=to);
            }
            None => out.push(number(part)?),
        }
    }
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err("no partitions given".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_spread_and_parsed() {
        assert_eq!(partition("acc-000001"), partition("acc-000001"));
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..2000 {
            seen.insert(partition(&format!("acc-{i:06}")));
        }
        assert_eq!(seen.len(), PARTITIONS as usize, "2000 accounts reach every partition");
        assert_eq!(parse_partitions("0-3,2,10").unwrap(), [0, 1, 2, 3, 10]);
        assert_eq!(parse_partitions("all").unwrap().len(), 64);
        assert!(parse_partitions("64").unwrap_err().contains("does not exist"));
        assert!(parse_partitions("5-2").unwrap_err().contains("empty"));
        assert!(parse_partitions("x").unwrap_err().contains("\"x\""));
    }
}
