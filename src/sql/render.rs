//! An [`Answer`](super::Answer) as text: an aligned table for people, CSV (RFC 4180, by the
//! `csv` crate) and JSON for programs. Pure functions of the answer.

use serde_json::Value;

use super::Answer;

/// How `hookledger sql` prints an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

pub fn render(answer: &Answer, format: Format) -> String {
    match format {
        Format::Table => table(answer),
        Format::Csv => csv(answer),
        Format::Json => {
            let mut s = serde_json::to_string_pretty(answer).expect("an answer is JSON");
            s.push('\n');
            s
        }
    }
}

/// A cell as text: strings bare, NULL as `NULL`, everything else as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell, columns of numbers right-aligned, a rule under the header, and a
/// last line with the row count (and whether the row cap cut the answer).
pub fn table(answer: &Answer) -> String {
    let cells: Vec<Vec<String>> = answer
        .rows
        .iter()
        .map(|r| r.iter().map(cell).collect())
        .collect();
    let widths: Vec<usize> = answer
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([c.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // A column of numbers (and NULLs) is right-aligned, header included.
    let numeric: Vec<bool> = (0..answer.columns.len())
        .map(|i| {
            answer.rows.iter().any(|r| r[i].is_number())
                && answer
                    .rows
                    .iter()
                    .all(|r| r[i].is_number() || r[i].is_null())
        })
        .collect();
    let line = |values: Vec<&str>| -> String {
        let parts: Vec<String> = values
            .iter()
            .zip(&widths)
            .zip(&numeric)
            .map(|((v, w), right)| {
                if *right {
                    format!("{v:>w$}")
                } else {
                    format!("{v:<w$}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(answer.columns.iter().map(String::as_str).collect());
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out += &(rule.join("  ") + "\n");
    for row in &cells {
        out += &line(row.iter().map(String::as_str).collect());
    }
    let n = answer.rows.len();
    out += &format!(
        "({n} row{}{})\n",
        if n == 1 { "" } else { "s" },
        if answer.truncated {
            ", cut at the row cap"
        } else {
            ""
        }
    );
    out
}

pub fn csv(answer: &Answer) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&answer.columns).expect("writing to memory");
    for row in &answer.rows {
        w.write_record(row.iter().map(|v| match v {
            Value::Null => String::new(),
            other => cell(other),
        }))
        .expect("writing to memory");
    }
    String::from_utf8(w.into_inner().expect("flushing to memory")).expect("CSV of UTF-8 cells")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer() -> Answer {
        Answer {
            columns: vec!["kind".into(), "n".into()],
            rows: vec![
                vec![json!("delivered"), json!(12)],
                vec![json!("dead, parked"), json!(3)],
                vec![Value::Null, json!(100)],
            ],
            truncated: true,
        }
    }

    #[test]
    fn tables_align_columns_and_say_when_cut() {
        assert_eq!(
            table(&answer()),
            "kind            n\n\
             ------------  ---\n\
             delivered      12\n\
             dead, parked    3\n\
             NULL          100\n\
             (3 rows, cut at the row cap)\n"
        );
    }

    #[test]
    fn csv_quotes_what_needs_it_and_leaves_null_empty() {
        assert_eq!(
            csv(&answer()),
            "kind,n\ndelivered,12\n\"dead, parked\",3\n,100\n"
        );
    }
}
