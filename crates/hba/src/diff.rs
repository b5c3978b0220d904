//! A unified diff of two byte buffers, by lines (for plan mode).

fn split(b: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in memchr::memchr_iter(b'\n', b) {
        out.push(&b[start..=i]);
        start = i + 1;
    }
    if start < b.len() {
        out.push(&b[start..]);
    }
    out
}

/// `diff -u` of `old` and `new` with three lines of context; empty when equal. Lines are
/// compared as bytes and printed lossily as UTF-8.
pub fn unified_diff(old: &[u8], new: &[u8], old_name: &str, new_name: &str) -> String {
    if old == new {
        return String::new();
    }
    let a = split(old);
    let b = split(new);
    let mut pre = 0;
    while pre < a.len() && pre < b.len() && a[pre] == b[pre] {
        pre += 1;
    }
    let mut suf = 0;
    while suf < a.len() - pre && suf < b.len() - pre && a[a.len() - 1 - suf] == b[b.len() - 1 - suf]
    {
        suf += 1;
    }
    // The changed middle is a[pre..a.len()-suf] vs b[pre..b.len()-suf]; align it with an LCS
    // when small, else print it as one replacement.
    let am = &a[pre..a.len() - suf];
    let bm = &b[pre..b.len() - suf];
    let mut ops: Vec<(char, &[u8])> = Vec::new();
    if am.len() * bm.len() <= 4_000_000 {
        let (n, m) = (am.len(), bm.len());
        let mut t = vec![vec![0u32; m + 1]; n + 1];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                t[i][j] = if am[i] == bm[j] {
                    t[i + 1][j + 1] + 1
                } else {
                    t[i + 1][j].max(t[i][j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n || j < m {
            if i < n && j < m && am[i] == bm[j] {
                ops.push((' ', am[i]));
                i += 1;
                j += 1;
            } else if j < m && (i == n || t[i][j + 1] >= t[i + 1][j]) {
                ops.push(('+', bm[j]));
                j += 1;
            } else {
                ops.push(('-', am[i]));
                i += 1;
            }
        }
    } else {
        ops.extend(am.iter().map(|l| ('-', *l)));
        ops.extend(bm.iter().map(|l| ('+', *l)));
    }
    let ctx = 3;
    let lead = pre.min(ctx);
    let trail = suf.min(ctx);
    let mut body = String::new();
    let (mut na, mut nb) = (0, 0);
    let line = |tag: char, l: &[u8], body: &mut String| {
        body.push(tag);
        let text = String::from_utf8_lossy(l);
        body.push_str(&text);
        if !text.ends_with('\n') {
            body.push_str("\n\\ No newline at end of file\n");
        }
    };
    for l in &a[pre - lead..pre] {
        line(' ', l, &mut body);
        na += 1;
        nb += 1;
    }
    for (tag, l) in &ops {
        line(*tag, l, &mut body);
        match tag {
            ' ' => {
                na += 1;
                nb += 1;
            }
            '-' => na += 1,
            _ => nb += 1,
        }
    }
    for l in &a[a.len() - suf..a.len() - suf + trail] {
        line(' ', l, &mut body);
        na += 1;
        nb += 1;
    }
    let start_a = if na == 0 { pre - lead } else { pre - lead + 1 };
    let start_b = if nb == 0 { pre - lead } else { pre - lead + 1 };
    format!("--- {old_name}\n+++ {new_name}\n@@ -{start_a},{na} +{start_b},{nb} @@\n{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_inserted_line() {
        let d = unified_diff(b"a\nb\nc\n", b"a\nb\nx\nc\n", "old", "new");
        assert_eq!(d, "--- old\n+++ new\n@@ -1,3 +1,4 @@\n a\n b\n+x\n c\n");
        assert_eq!(unified_diff(b"same", b"same", "o", "n"), "");
    }
}
