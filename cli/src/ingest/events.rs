//! One event per line: JSON lines `{"key": .., "ts": .., "delta"?: ..,
//! "namespace"?: ..}` (other fields ignored), or CSV rows `key,ts[,delta
//! [,namespace]]` with an optional header naming those columns in any
//! order. `ts` is milliseconds since the Unix epoch; `delta` defaults to
//! 1 and the namespace to the command's `--ns`.

/// An event read from a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub namespace: Option<String>,
    pub key: String,
    pub ts: i64,
    pub delta: i64,
}

/// How lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values.
    Csv,
}

#[derive(serde::Deserialize)]
struct JsonEvent {
    key: String,
    ts: i64,
    #[serde(default = "one")]
    delta: i64,
    #[serde(default)]
    namespace: Option<String>,
}

fn one() -> i64 {
    1
}

/// Which CSV column holds which field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    key: usize,
    ts: usize,
    delta: Option<usize>,
    namespace: Option<usize>,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            key: 0,
            ts: 1,
            delta: Some(2),
            namespace: Some(3),
        }
    }
}

/// What a line is.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Event(Event),
    /// Empty, or a CSV header (its columns).
    Skip(Option<Columns>),
}

/// Parses one line (without its newline). `first`: the source's first
/// line, where a CSV header may stand.
pub fn parse(format: Format, line: &[u8], columns: &Columns, first: bool) -> Result<Line, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let text = text.trim_end_matches('\r');
    if text.trim().is_empty() {
        return Ok(Line::Skip(None));
    }
    match format {
        Format::Jsonl => {
            let e: JsonEvent = serde_json::from_str(text).map_err(|e| e.to_string())?;
            Ok(Line::Event(Event {
                namespace: e.namespace,
                key: e.key,
                ts: e.ts,
                delta: e.delta,
            }))
        }
        Format::Csv => {
            let fields = split_csv(text)?;
            if first && fields.iter().any(|f| f == "key") && fields.iter().any(|f| f == "ts") {
                let at = |name: &str| fields.iter().position(|f| f == name);
                return Ok(Line::Skip(Some(Columns {
                    key: at("key").unwrap_or(0),
                    ts: at("ts").unwrap_or(1),
                    delta: at("delta"),
                    namespace: at("namespace"),
                })));
            }
            let field = |i: Option<usize>| i.and_then(|i| fields.get(i)).filter(|f| !f.is_empty());
            let key = field(Some(columns.key)).ok_or("no key")?.clone();
            let ts = field(Some(columns.ts))
                .ok_or("no ts")?
                .parse::<i64>()
                .map_err(|_| "ts is not an integer (ms since the epoch)".to_string())?;
            let delta = match field(columns.delta) {
                Some(d) => d
                    .parse::<i64>()
                    .map_err(|_| "delta is not an integer".to_string())?,
                None => 1,
            };
            Ok(Line::Event(Event {
                namespace: field(columns.namespace).cloned(),
                key,
                ts,
                delta,
            }))
        }
    }
}

/// Splits a CSV row; fields may be quoted (`"a,b"`, `""` for a quote).
fn split_csv(row: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = row.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            '"' if quoted => {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    quoted = false;
                    if chars.peek().is_some_and(|&n| n != ',') {
                        return Err("text after a closing quote".into());
                    }
                }
            }
            ',' if !quoted => {
                fields.push(std::mem::take(&mut field));
                at_start = true;
            }
            c => {
                field.push(c);
                at_start = false;
            }
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    fields.push(field);
    Ok(fields)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn event(ns: Option<&str>, key: &str, ts: i64, delta: i64) -> Line {
        Line::Event(Event {
            namespace: ns.map(str::to_owned),
            key: key.into(),
            ts,
            delta,
        })
    }

    #[test]
    fn json_lines_take_optional_fields_and_ignore_others() {
        let c = Columns::default();
        let p = |s: &str| parse(Format::Jsonl, s.as_bytes(), &c, false);
        assert_eq!(
            p(r#"{"key":"v1","ts":60000}"#).unwrap(),
            event(None, "v1", 60_000, 1)
        );
        assert_eq!(
            p(r#"{"key":"v1","ts":5,"delta":-3,"namespace":"likes","user":"x"}"#).unwrap(),
            event(Some("likes"), "v1", 5, -3)
        );
        assert_eq!(p("  ").unwrap(), Line::Skip(None));
        assert!(p(r#"{"key":"v1"}"#).is_err(), "no ts");
        assert!(p(r#"{"key":"v1","ts":"soon"}"#).is_err());
        assert!(p("{not json").is_err());
    }

    #[test]
    fn csv_rows_with_a_header_quotes_and_defaults() {
        let c = Columns::default();
        let p = |s: &str, c: &Columns, first| parse(Format::Csv, s.as_bytes(), c, first);
        assert_eq!(
            p("v1,60000", &c, false).unwrap(),
            event(None, "v1", 60_000, 1)
        );
        assert_eq!(
            p("\"a,\"\"b\",7,2,likes\r", &c, false).unwrap(),
            event(Some("likes"), "a,\"b", 7, 2)
        );
        let Line::Skip(Some(h)) = p("ts,namespace,key", &c, true).unwrap() else {
            panic!("a header")
        };
        assert_eq!(
            p("9,likes,v2", &h, false).unwrap(),
            event(Some("likes"), "v2", 9, 1)
        );
        assert!(p("v1,soon", &c, false).is_err());
        assert!(p("v1", &c, false).is_err());
        assert!(p("\"v1,5", &c, false).is_err());
        assert!(
            p("key,ts", &c, false).is_err(),
            "a header only on the first line"
        );
    }

    proptest! {
        /// Any key survives CSV quoting and JSON escaping.
        #[test]
        fn keys_round_trip_through_both_formats(key in "[^\r\n]{1,40}", ts in 0i64..1 << 45, delta in any::<i64>()) {
            let c = Columns::default();
            let json = serde_json::json!({"key": key, "ts": ts, "delta": delta}).to_string();
            prop_assert_eq!(parse(Format::Jsonl, json.as_bytes(), &c, false).unwrap(), event(None, &key, ts, delta));
            let csv = format!("\"{}\",{ts},{delta}", key.replace('"', "\"\""));
            prop_assert_eq!(parse(Format::Csv, csv.as_bytes(), &c, false).unwrap(), event(None, &key, ts, delta));
        }
    }
}
