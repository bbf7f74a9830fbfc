//! The two input forms of `dengine txn`: a line-oriented text form and a
//! JSON form (chosen when the input starts with `{`). The grammar is in
//! `docs/cli.md`; every error names the line (or JSON path) and what was
//! expected.
//!
//! Text form:
//!
//! ```text
//! compare:
//!   value("config/mode") = "blue"
//!   version("config/mode") > 2
//! success:
//!   put "config/mode" "green"
//!   get config/ prefix
//! failure:
//!   get "config/mode"
//! ```

use d_engine_client::{Compare, CompareOp, CompareTarget, RangeEnd, RangeOptions, Txn, TxnOp};
use serde::Deserialize;

/// Parses either form.
pub fn parse(input: &str) -> Result<Txn, String> {
    let txn = if input.trim_start().starts_with('{') {
        parse_json(input)?
    } else {
        parse_text(input)?
    };
    if txn.compares.is_empty() && txn.success.is_empty() && txn.failure.is_empty() {
        return Err(
            "the transaction is empty: give at least one compare or operation \
                    (see `dengine txn --help` and docs/cli.md)"
                .into(),
        );
    }
    Ok(txn)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Compare,
    Success,
    Failure,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(Vec<u8>),
    LParen,
    RParen,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Quoted(q) => format!("\"{}\"", String::from_utf8_lossy(q)),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
        }
    }
}

/// Splits one line into words, quoted strings and parentheses. Quoted
/// strings take `\"`, `\\`, `\n`, `\t` and `\xHH`.
fn tokenize(line: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '#' => break,
            '(' => {
                chars.next();
                out.push(Tok::LParen);
            }
            ')' => {
                chars.next();
                out.push(Tok::RParen);
            }
            '"' => {
                chars.next();
                let mut s = Vec::new();
                loop {
                    match chars.next() {
                        None => return Err("unterminated quoted string (missing `\"`)".into()),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('"') => s.push(b'"'),
                            Some('\\') => s.push(b'\\'),
                            Some('n') => s.push(b'\n'),
                            Some('t') => s.push(b'\t'),
                            Some('x') => {
                                let h: String = chars.by_ref().take(2).collect();
                                let b = u8::from_str_radix(&h, 16).map_err(|_| {
                                    format!("bad escape \\x{h}: use two hex digits, e.g. \\x00")
                                })?;
                                s.push(b);
                            }
                            other => {
                                return Err(format!(
                                    "unknown escape \\{}; use \\\", \\\\, \\n, \\t or \\xHH",
                                    other.map(String::from).unwrap_or_default()
                                ))
                            }
                        },
                        Some(ch) => {
                            let mut buf = [0u8; 4];
                            s.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        }
                    }
                }
                out.push(Tok::Quoted(s));
            }
            _ => {
                let mut w = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || matches!(ch, '(' | ')' | '"' | '#') {
                        break;
                    }
                    w.push(ch);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

fn parse_text(input: &str) -> Result<Txn, String> {
    let mut txn = Txn::new();
    let mut section = None;
    for (i, line) in input.lines().enumerate() {
        let at = |e: String| format!("txn line {}: {e}", i + 1);
        let toks = tokenize(line).map_err(at)?;
        let Some(first) = toks.first() else { continue };
        if let (Tok::Word(w), 1) = (first, toks.len()) {
            let s = match w.to_ascii_lowercase().as_str() {
                "compare:" | "if:" => Some(Section::Compare),
                "success:" | "then:" => Some(Section::Success),
                "failure:" | "else:" => Some(Section::Failure),
                _ => None,
            };
            if s.is_some() {
                section = s;
                continue;
            }
        }
        match section {
            None => {
                return Err(at(format!(
                    "{} comes before a section; start with `compare:`, `success:` or `failure:`",
                    first.describe()
                )))
            }
            Some(Section::Compare) => txn.compares.push(parse_compare(&toks).map_err(at)?),
            Some(Section::Success) => txn.success.push(parse_op(&toks).map_err(at)?),
            Some(Section::Failure) => txn.failure.push(parse_op(&toks).map_err(at)?),
        }
    }
    Ok(txn)
}

fn bytes(t: &Tok) -> Option<Vec<u8>> {
    match t {
        Tok::Word(w) => Some(w.as_bytes().to_vec()),
        Tok::Quoted(q) => Some(q.clone()),
        _ => None,
    }
}

const COMPARE_FORM: &str =
    "expected TARGET(KEY) OP OPERAND, e.g. value(\"k\") = \"v\" or version(\"k\") > 2 \
     (TARGET: value, version, create, mod, lease; OP: =, !=, <, >)";

fn parse_compare(toks: &[Tok]) -> Result<Compare, String> {
    let (target, key, rest) = match toks {
        [Tok::Word(t), Tok::LParen, k, Tok::RParen, rest @ ..] => {
            (t.to_ascii_lowercase(), bytes(k).ok_or(COMPARE_FORM)?, rest)
        }
        _ => return Err(COMPARE_FORM.into()),
    };
    // The operator may be glued to the operand (`>3`).
    let (op_text, operand) = match rest {
        [Tok::Word(w), operand] => (w.clone(), operand.clone()),
        [Tok::Word(w)] => {
            let n = w
                .find(|c: char| !matches!(c, '=' | '!' | '<' | '>'))
                .unwrap_or(w.len());
            (w[..n].to_string(), Tok::Word(w[n..].to_string()))
        }
        _ => return Err(COMPARE_FORM.into()),
    };
    let op = compare_op(&op_text)?;
    let operand_text =
        || String::from_utf8_lossy(&bytes(&operand).unwrap_or_default()).into_owned();
    let number = || -> Result<u64, String> {
        let s = operand_text();
        s.parse()
            .map_err(|_| format!("{target}(...) compares with a number, got {s:?}"))
    };
    let target = match target.as_str() {
        "value" => CompareTarget::Value(bytes(&operand).ok_or(COMPARE_FORM)?),
        "version" => CompareTarget::Version(number()?),
        "create" | "create_revision" => CompareTarget::CreateRevision(number()?),
        "mod" | "mod_revision" => CompareTarget::ModRevision(number()?),
        "lease" => CompareTarget::Lease(number()?),
        other => {
            return Err(format!(
                "unknown compare target `{other}`; use value, version, create, mod or lease"
            ))
        }
    };
    Ok(Compare::new(key, op, target))
}

fn compare_op(s: &str) -> Result<CompareOp, String> {
    Ok(match s {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        other => return Err(format!("unknown operator `{other}`; use =, !=, < or >")),
    })
}

const OP_FORM: &str = "expected `put KEY VALUE [lease=ID]`, `get KEY [prefix|from_key|end=END]` \
                       or `del KEY [prefix|from_key|end=END] [prev_kv]`";

fn parse_op(toks: &[Tok]) -> Result<TxnOp, String> {
    let (verb, key, rest) = match toks {
        [Tok::Word(v), k, rest @ ..] => (v.to_ascii_lowercase(), bytes(k).ok_or(OP_FORM)?, rest),
        _ => return Err(OP_FORM.into()),
    };
    match verb.as_str() {
        "put" => {
            let (value, opts) = match rest {
                [v, opts @ ..] => (bytes(v).ok_or(OP_FORM)?, opts),
                [] => return Err(format!("put needs a value; {OP_FORM}")),
            };
            let mut lease = 0;
            for o in opts {
                match o {
                    Tok::Word(w) if w.starts_with("lease=") => {
                        lease = crate::args::parse_id(&w["lease=".len()..])?;
                    }
                    other => {
                        return Err(format!(
                            "unexpected {} after put; {OP_FORM}",
                            other.describe()
                        ))
                    }
                }
            }
            Ok(TxnOp::Put { key, value, lease })
        }
        "get" | "del" => {
            let mut end = RangeEnd::Single;
            let mut prev_kv = false;
            let mut it = rest.iter();
            while let Some(o) = it.next() {
                let set = |end: &mut RangeEnd, v: RangeEnd| -> Result<(), String> {
                    if *end != RangeEnd::Single {
                        return Err("give only one of prefix, from_key, end=".into());
                    }
                    *end = v;
                    Ok(())
                };
                match o {
                    Tok::Word(w) if w == "prefix" => set(&mut end, RangeEnd::Prefix)?,
                    Tok::Word(w) if w == "from_key" => set(&mut end, RangeEnd::FromKey)?,
                    Tok::Word(w) if w == "prev_kv" && verb == "del" => prev_kv = true,
                    Tok::Word(w) if w == "end=" => {
                        let e = it.next().and_then(bytes).ok_or("end= needs a key")?;
                        set(&mut end, RangeEnd::Before(e))?
                    }
                    Tok::Word(w) if w.starts_with("end=") => set(
                        &mut end,
                        RangeEnd::Before(w.as_bytes()["end=".len()..].to_vec()),
                    )?,
                    other => {
                        return Err(format!(
                            "unexpected {} after {verb}; {OP_FORM}",
                            other.describe()
                        ))
                    }
                }
            }
            Ok(if verb == "get" {
                TxnOp::Range {
                    key,
                    options: RangeOptions {
                        end,
                        ..Default::default()
                    },
                }
            } else {
                TxnOp::DeleteRange { key, end, prev_kv }
            })
        }
        other => Err(format!("unknown operation `{other}`; {OP_FORM}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTxn {
    #[serde(default)]
    compare: Vec<JsonCompare>,
    #[serde(default)]
    success: Vec<JsonOp>,
    #[serde(default)]
    failure: Vec<JsonOp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCompare {
    key: String,
    target: String,
    op: String,
    value: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum JsonOp {
    Put {
        key: String,
        value: String,
        #[serde(default)]
        lease: u64,
    },
    Get {
        key: String,
        #[serde(default)]
        prefix: bool,
        #[serde(default)]
        from_key: bool,
        range_end: Option<String>,
    },
    Del {
        key: String,
        #[serde(default)]
        prefix: bool,
        #[serde(default)]
        from_key: bool,
        range_end: Option<String>,
        #[serde(default)]
        prev_kv: bool,
    },
}

fn json_end(prefix: bool, from_key: bool, range_end: Option<String>) -> Result<RangeEnd, String> {
    match (prefix, from_key, range_end) {
        (false, false, None) => Ok(RangeEnd::Single),
        (true, false, None) => Ok(RangeEnd::Prefix),
        (false, true, None) => Ok(RangeEnd::FromKey),
        (false, false, Some(e)) => Ok(RangeEnd::Before(e.into_bytes())),
        _ => Err("give only one of prefix, from_key, range_end".into()),
    }
}

fn parse_json(input: &str) -> Result<Txn, String> {
    let j: JsonTxn = serde_json::from_str(input).map_err(|e| format!("txn JSON: {e}"))?;
    let mut txn = Txn::new();
    for (i, c) in j.compare.into_iter().enumerate() {
        let at = |e: String| format!("txn JSON compare[{i}]: {e}");
        let op = compare_op(&c.op).map_err(at)?;
        let num = || {
            c.value
                .as_u64()
                .ok_or_else(|| at(format!("`{}` compares with a number", c.target)))
        };
        let target = match c.target.as_str() {
            "value" => CompareTarget::Value(
                c.value
                    .as_str()
                    .ok_or_else(|| at("`value` compares with a string".into()))?
                    .as_bytes()
                    .to_vec(),
            ),
            "version" => CompareTarget::Version(num()?),
            "create" | "create_revision" => CompareTarget::CreateRevision(num()?),
            "mod" | "mod_revision" => CompareTarget::ModRevision(num()?),
            "lease" => CompareTarget::Lease(num()?),
            other => {
                return Err(at(format!(
                    "unknown target `{other}`; use value, version, create, mod or lease"
                )))
            }
        };
        txn.compares
            .push(Compare::new(c.key.into_bytes(), op, target));
    }
    let ops = |list: Vec<JsonOp>, branch: &str| -> Result<Vec<TxnOp>, String> {
        list.into_iter()
            .enumerate()
            .map(|(i, o)| {
                let at = |e: String| format!("txn JSON {branch}[{i}]: {e}");
                Ok(match o {
                    JsonOp::Put { key, value, lease } => TxnOp::Put {
                        key: key.into_bytes(),
                        value: value.into_bytes(),
                        lease,
                    },
                    JsonOp::Get {
                        key,
                        prefix,
                        from_key,
                        range_end,
                    } => TxnOp::Range {
                        key: key.into_bytes(),
                        options: RangeOptions {
                            end: json_end(prefix, from_key, range_end).map_err(at)?,
                            ..Default::default()
                        },
                    },
                    JsonOp::Del {
                        key,
                        prefix,
                        from_key,
                        range_end,
                        prev_kv,
                    } => TxnOp::DeleteRange {
                        key: key.into_bytes(),
                        end: json_end(prefix, from_key, range_end).map_err(at)?,
                        prev_kv,
                    },
                })
            })
            .collect()
    };
    txn.success = ops(j.success, "success")?;
    txn.failure = ops(j.failure, "failure")?;
    Ok(txn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_parses_every_construct() {
        let t = parse(
            "# move the mode\ncompare:\n  value(\"config/mode\") = \"blue\"\n  version(k)>2\n  \
             create(\"new\") = 0\n  mod(k) != 7\n  lease(k) < 9\nsuccess:\n  \
             put \"config/mode\" \"gr\\x65en\" lease=0x10\n  get config/ prefix\n  \
             del a end=\"b\" prev_kv\nfailure:\n  get \"config/mode\"\n  del x from_key\n",
        )
        .unwrap();
        assert_eq!(t.compares.len(), 5);
        assert_eq!(t.compares[0], Compare::value_equals("config/mode", "blue"));
        assert_eq!(
            t.compares[1],
            Compare::new("k", CompareOp::Greater, CompareTarget::Version(2))
        );
        assert_eq!(t.compares[2], Compare::missing("new"));
        assert_eq!(
            t.success[0],
            TxnOp::Put {
                key: b"config/mode".to_vec(),
                value: b"green".to_vec(),
                lease: 16
            }
        );
        assert_eq!(
            t.success[2],
            TxnOp::DeleteRange {
                key: b"a".to_vec(),
                end: RangeEnd::Before(b"b".to_vec()),
                prev_kv: true
            }
        );
        assert_eq!(t.failure.len(), 2);
    }

    #[test]
    fn text_errors_name_the_line_and_the_form() {
        let e = parse("put a b").unwrap_err();
        assert!(e.contains("line 1") && e.contains("section"), "{e}");
        let e = parse("compare:\n value(a) ~ b").unwrap_err();
        assert!(e.contains("line 2") && e.contains("operator"), "{e}");
        let e = parse("compare:\n version(a) = x").unwrap_err();
        assert!(e.contains("number"), "{e}");
        let e = parse("success:\n frob a").unwrap_err();
        assert!(e.contains("unknown operation `frob`"), "{e}");
        let e = parse("success:\n put \"a").unwrap_err();
        assert!(e.contains("unterminated"), "{e}");
        let e = parse("success:\n get a prefix from_key").unwrap_err();
        assert!(e.contains("only one"), "{e}");
        assert!(parse("# nothing\n").unwrap_err().contains("empty"));
    }

    #[test]
    fn json_form_parses_and_names_bad_fields() {
        let t = parse(
            r#"{"compare":[{"key":"k","target":"version","op":">","value":1}],
                "success":[{"put":{"key":"k","value":"v"}},{"get":{"key":"k","prefix":true}}],
                "failure":[{"del":{"key":"k","range_end":"l","prev_kv":true}}]}"#,
        )
        .unwrap();
        assert_eq!(t.compares.len(), 1);
        assert_eq!(t.success.len(), 2);
        assert_eq!(t.failure.len(), 1);
        let e = parse(r#"{"compare":[{"key":"k","target":"version","op":">","value":"x"}]}"#)
            .unwrap_err();
        assert!(e.contains("compare[0]") && e.contains("number"), "{e}");
        let e = parse(r#"{"succes":[]}"#).unwrap_err();
        assert!(e.contains("succes"), "{e}");
    }
}
