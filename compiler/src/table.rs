//! Cells of the text tables that reports print (pass summaries, profiles, plans, memory).
//! Exporters write value and node names of 100 characters and more (tf2onnx:
//! `model/block_3/conv2d_7/BiasAdd:0` inside several scopes), which would make every row of a
//! table as wide; tables shorten them, while the IR text and JSON keep them whole.

/// The width names are shortened to in tables.
pub const NAME_WIDTH: usize = 48;

/// `name` cut to at most `width` characters by replacing its middle with `...`, keeping more of
/// the tail (the op and output index, which tell rows apart) than of the head (the outer scopes).
pub fn shorten(name: &str, width: usize) -> String {
    let chars: Vec<char> = name.chars().collect();
    if chars.len() <= width || width < 5 {
        return name.to_string();
    }
    let keep = width - 3;
    let head = keep / 3;
    let tail = keep - head;
    let mut s: String = chars[..head].iter().collect();
    s.push_str("...");
    s.extend(&chars[chars.len() - tail..]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_short_names_and_the_ends_of_long_ones() {
        assert_eq!(shorten("Conv__25", NAME_WIDTH), "Conv__25");
        let long = "model/stage_4/block_3/scope_a/scope_b/scope_c/conv2d_7/BiasAdd:0";
        let s = shorten(long, 32);
        assert_eq!(s.chars().count(), 32);
        assert_eq!(s, "model/sta...c/conv2d_7/BiasAdd:0");
        // Characters, not bytes: no panic in the middle of a multi-byte one.
        assert_eq!(shorten(&"é".repeat(60), 10).chars().count(), 10);
        assert_eq!(shorten(&"x".repeat(49), NAME_WIDTH).len(), NAME_WIDTH);
    }
}
