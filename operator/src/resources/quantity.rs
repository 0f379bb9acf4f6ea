//! Kubernetes quantities (`100Gi`, `1.5T`, `500M`) to bytes: a node's layout capacity
//! defaults to its data volume size, and bucket quotas are written as quantities.

/// Parses a quantity into bytes; `None` for malformed, negative or overflowing input
/// (user input: never a panic). Fractions are rounded down.
#[must_use]
pub fn to_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    if num.is_empty() {
        return None;
    }
    let mult: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return None,
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if frac.contains('.') || frac.len() > 9 {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let frac_den = 10u128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    let bytes = int.checked_mul(mult)? + frac_val.checked_mul(mult)? / frac_den;
    u64::try_from(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::to_bytes;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(to_bytes("100Gi"), Some(100 << 30));
        assert_eq!(to_bytes("1.5Ki"), Some(1536));
        assert_eq!(to_bytes("2T"), Some(2_000_000_000_000));
        assert_eq!(to_bytes("42"), Some(42));
    }

    #[test]
    fn bad_input_is_none() {
        for bad in [
            "",
            "Gi",
            "-1Gi",
            "1.2.3",
            "10Xi",
            "99999999999999999999Ei",
            "1e3",
        ] {
            assert_eq!(to_bytes(bad), None, "{bad}");
        }
    }
}
