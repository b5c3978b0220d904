//! PostgreSQL's path arithmetic for included files (`join_path_components`,
//! `get_parent_directory`, `canonicalize_path`), on bytes, so error texts name the same path.

/// `trim_directory`: cut the last component (keeps a leading slash).
fn trim_directory(path: &mut Vec<u8>) {
    if path.is_empty() {
        return;
    }
    let mut p = path.len() - 1;
    while p > 0 && path[p] == b'/' {
        p -= 1;
    }
    while p > 0 && path[p] != b'/' {
        p -= 1;
    }
    while p > 0 && path[p - 1] == b'/' {
        p -= 1;
    }
    if p == 0 && path[0] == b'/' {
        p = 1;
    }
    path.truncate(p);
}

/// `join_path_components(head, tail)`.
fn join(head: &[u8], mut tail: &[u8]) -> Vec<u8> {
    let mut ret = head.to_vec();
    while tail.len() >= 2 && tail[0] == b'.' && tail[1] == b'/' {
        tail = &tail[2..];
    }
    if !tail.is_empty() {
        if !head.is_empty() {
            ret.push(b'/');
        }
        ret.extend_from_slice(tail);
    }
    ret
}

/// `canonicalize_path` of PostgreSQL 13 to 15: duplicate and trailing slashes, trailing `.`
/// and `..` components only.
fn canonicalize_old(path: &mut Vec<u8>) {
    // trim trailing separators (keep a lone leading one)
    while path.len() > 1 && path.last() == Some(&b'/') {
        path.pop();
    }
    // collapse adjacent slashes
    let mut out = Vec::with_capacity(path.len());
    let mut was_sep = false;
    for &c in path.iter() {
        if c == b'/' && was_sep {
            continue;
        }
        was_sep = c == b'/';
        out.push(c);
    }
    *path = out;
    let mut pending = 0usize;
    loop {
        let len = path.len();
        if len >= 2 && path.ends_with(b"/.") {
            trim_directory(path);
        } else if path.as_slice() == b"." {
            if pending > 0 {
                path.clear();
            }
            break;
        } else if (len >= 3 && path.ends_with(b"/..")) || path.as_slice() == b".." {
            trim_directory(path);
            pending += 1;
        } else if pending > 0 && !path.is_empty() {
            trim_directory(path);
            pending -= 1;
            if path.is_empty() {
                path.push(b'.');
            }
        } else {
            break;
        }
    }
    if pending > 0 {
        // ".." components that could not be cancelled are put back
        for _ in 0..pending {
            if !path.is_empty() && path.as_slice() != b"/" {
                path.push(b'/');
            } else if path.is_empty() {
                // relative: leave as ".."
            }
            path.extend_from_slice(b"..");
        }
    }
}

/// `canonicalize_path` of PostgreSQL 16+: every `.` and `..` component is resolved.
fn canonicalize_new(path: &mut Vec<u8>) {
    let absolute = path.first() == Some(&b'/');
    let mut comps: Vec<&[u8]> = Vec::new();
    let mut ups = 0usize;
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if comps.pop().is_none() && !absolute {
                    ups += 1;
                }
            }
            other => comps.push(other),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if absolute {
        out.push(b'/');
    }
    let mut first = true;
    for _ in 0..ups {
        if !first {
            out.push(b'/');
        }
        out.extend_from_slice(b"..");
        first = false;
    }
    for c in comps {
        if !first {
            out.push(b'/');
        }
        out.extend_from_slice(c);
        first = false;
    }
    if out.is_empty() {
        out.push(b'.');
    }
    *path = out;
}

/// The absolute name under which the server opens `location` referenced from `calling_file`.
pub(crate) fn absolute_location(location: &[u8], calling_file: &[u8], new_rules: bool) -> Vec<u8> {
    if location.first() == Some(&b'/') {
        return location.to_vec();
    }
    let mut dir = calling_file.to_vec();
    trim_directory(&mut dir);
    let mut full = join(&dir, location);
    if new_rules {
        canonicalize_new(&mut full);
    } else {
        canonicalize_old(&mut full);
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(l: &str, f: &str, new: bool) -> String {
        String::from_utf8(absolute_location(l.as_bytes(), f.as_bytes(), new)).unwrap()
    }

    #[test]
    fn relative_to_the_including_file() {
        assert_eq!(loc("x", "/d/pg_hba.conf", false), "/d/x");
        assert_eq!(loc("./x", "/d/pg_hba.conf", false), "/d/x");
        assert_eq!(loc("a//b/", "/d/pg_hba.conf", false), "/d/a/b");
        assert_eq!(loc("../x", "/d/e/pg_hba.conf", false), "/d/e/../x");
        assert_eq!(loc("../x", "/d/e/pg_hba.conf", true), "/d/x");
        assert_eq!(loc("/abs//x", "/d/pg_hba.conf", true), "/abs//x");
    }
}
