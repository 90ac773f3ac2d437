//! Go's `text/tabwriter` as Docker configures it (`minwidth 10, tabwidth 1, padding 3`,
//! space padding, no flags): tab-terminated cells are aligned in columns; the text after the
//! last tab of a line is not part of a column. A column block ends at a line with fewer cells,
//! as in Go.

/// Aligns `text` (lines of tab-separated cells).
pub fn align(text: &str, minwidth: usize, padding: usize) -> String {
    let lines: Vec<Vec<&str>> = text
        .split_terminator('\n')
        .map(|l| l.split('\t').collect())
        .collect();
    let mut widths: Vec<Vec<usize>> = lines
        .iter()
        .map(|l| vec![0; l.len().saturating_sub(1)])
        .collect();
    // Go computes widths per column block: consecutive lines that have a cell in column c.
    let max_cols = lines
        .iter()
        .map(|l| l.len().saturating_sub(1))
        .max()
        .unwrap_or(0);
    for c in 0..max_cols {
        let mut i = 0;
        while i < lines.len() {
            if lines[i].len().saturating_sub(1) <= c {
                i += 1;
                continue;
            }
            let start = i;
            let mut w = 0;
            while i < lines.len() && lines[i].len().saturating_sub(1) > c {
                w = w.max(lines[i][c].chars().count() + padding);
                i += 1;
            }
            let w = w.max(minwidth);
            for row in widths.iter_mut().take(i).skip(start) {
                row[c] = w;
            }
        }
    }
    let mut out = String::new();
    for (l, w) in lines.iter().zip(&widths) {
        for (c, cell) in l.iter().enumerate() {
            out.push_str(cell);
            if c < w.len() {
                let n = cell.chars().count();
                out.push_str(&" ".repeat(w[c].saturating_sub(n)));
            }
        }
        out.push('\n');
    }
    out
}

/// Docker's table alignment.
pub fn docker_table(text: &str) -> String {
    align(text, 10, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_layout() {
        let t = "REPOSITORY\tTAG\tIMAGE ID\tCREATED\tSIZE\nbusybox\tlatest\t6d5fcfe5ff17\t2 weeks ago\t4.26MB\n";
        assert_eq!(
            docker_table(t),
            "REPOSITORY   TAG       IMAGE ID       CREATED       SIZE\n\
             busybox      latest    6d5fcfe5ff17   2 weeks ago   4.26MB\n"
        );
        // A trailing cell-less line and empty cells.
        assert_eq!(docker_table("a\tb\n"), "a         b\n");
        assert_eq!(docker_table("x\n"), "x\n");
    }
}
