//! Minimal JSON writing. Rust's `Display` for floats prints the shortest decimal that parses
//! back to the same value, which is exactly the round-trip guarantee `--json` promises.

use std::fmt::Write;

/// A float as a JSON number; non-finite values (which JSON cannot hold) become `null`.
pub fn num<T: Into<f64> + Copy + std::fmt::Display>(v: T) -> String {
    if v.into().is_finite() {
        format!("{v}")
    } else {
        "null".to_string()
    }
}

/// `[a,b,c]` of floats.
pub fn array<T: Into<f64> + Copy + std::fmt::Display>(values: &[T]) -> String {
    let mut s = String::with_capacity(values.len() * 12 + 2);
    s.push('[');
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&num(*v));
    }
    s.push(']');
    s
}

/// `[[..],[..]]` of fixed-size float rows.
pub fn rows<const K: usize>(values: &[[f32; K]]) -> String {
    let mut s = String::from("[");
    for (i, row) in values.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&array(row));
    }
    s.push(']');
    s
}

/// A JSON string literal.
pub fn string(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_and_non_finite_is_null() {
        let v = [0.1f32, 1.0 / 3.0, -0.0, 1e-30, f32::MAX];
        let text = array(&v);
        let parsed: Vec<f32> = text[1..text.len() - 1].split(',').map(|t| t.parse().unwrap()).collect();
        assert_eq!(parsed.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), v.map(f32::to_bits).to_vec());
        assert_eq!(num(f64::NAN), "null");
        assert_eq!(num(f64::INFINITY), "null");
        assert_eq!(string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
