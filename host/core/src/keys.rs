//! Redis key parts shared by the state backend and the cluster directory.

/// The Redis Cluster hash tag of `(namespace, key1)`: `{<namespace>/<key1>}`,
/// with `%`, `{` and `}` in `key1` written `%25`, `%7B` and `%7D` so that the
/// tag always ends where it should. Every key of one actor — its state rows
/// (by convention `namespace` = its type, `key1` = its key) and its
/// placement entry — shares this tag, and so one slot.
pub fn hash_tag(namespace: &str, key1: &str) -> String {
    let mut tag = String::with_capacity(namespace.len() + key1.len() + 3);
    tag.push('{');
    tag.push_str(namespace);
    tag.push('/');
    for c in key1.chars() {
        match c {
            '%' => tag.push_str("%25"),
            '{' => tag.push_str("%7B"),
            '}' => tag.push_str("%7D"),
            c => tag.push(c),
        }
    }
    tag.push('}');
    tag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_in_a_key_cannot_end_the_tag_early() {
        assert_eq!(hash_tag("player", "42"), "{player/42}");
        assert_eq!(hash_tag("player", "a}b{c%"), "{player/a%7Db%7Bc%25}");
    }
}
