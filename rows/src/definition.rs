//! Dataset definitions: the TOML files of `INGEST_DATASETS_DIR` read into [`Dataset`]s.
//!
//! Everything is checked when the file is read (at service start), so a mistake is an error
//! naming the file, the line and the field rather than a chunk failing later. The format is
//! described in the README ("Datasets") and `datasets/transactions.toml` is the reference.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::format::{Item, StrftimeItems};
use serde::Deserialize;
use toml::Spanned;

use crate::cell::CellContext;
use crate::dataset::{
    Column, ColumnKind, Dataset, ExtraColumns, Format, OnConflict, PartitionBy, Partitioning,
    TextEncoding, LINEAGE_COLUMNS,
};
use crate::validate::ErrorPolicy;

/// Longest table name: PostgreSQL's 63 bytes less a day partition's `_YYYY_MM_DD`.
const MAX_TABLE_NAME: usize = 52;
/// PostgreSQL's own limit for `numeric(p, s)`.
const MAX_PRECISION: u32 = 1000;

/// A definition that cannot be used, and where it is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {field}: {message}", file.display())]
pub struct DefinitionError {
    pub file: PathBuf,
    /// 1-based line of the field (or of its table).
    pub line: usize,
    /// The field, e.g. `columns[2].scale`.
    pub field: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatasetDef {
    name: Option<Spanned<String>>,
    table: Option<Spanned<String>>,
    delimiter: Option<Spanned<String>>,
    quote: Option<Spanned<String>>,
    header: Option<bool>,
    encoding: Option<EncodingDef>,
    extra_columns: Option<ExtraDef>,
    formula_injection: Option<FormulaDef>,
    on_error: Option<OnErrorDef>,
    partition: Option<Spanned<PartitionDef>>,
    unique_key: Option<Spanned<Vec<String>>>,
    on_conflict: Option<Spanned<ConflictDef>>,
    sheet: Option<String>,
    columns: Spanned<Vec<Spanned<ColumnDef>>>,
}

#[derive(Deserialize)]
enum EncodingDef {
    #[serde(rename = "utf-8", alias = "UTF-8", alias = "utf8")]
    Utf8,
    #[serde(
        rename = "latin-1",
        alias = "iso-8859-1",
        alias = "windows-1252",
        alias = "cp1252"
    )]
    Latin1,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ExtraDef {
    Ignore,
    Refuse,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum FormulaDef {
    Reject,
    Allow,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum OnErrorDef {
    RejectRows,
    RejectChunk,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ConflictDef {
    Error,
    Skip,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionDef {
    column: String,
    by: ByDef,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum ByDef {
    Month,
    Day,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnDef {
    name: String,
    /// The header name(s) meaning this column besides its own name.
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(rename = "type")]
    kind: TypeDef,
    #[serde(default)]
    required: bool,
    default: Option<String>,
    max_length: Option<usize>,
    values: Option<Vec<String>>,
    precision: Option<u32>,
    scale: Option<u32>,
    formats: Option<Vec<String>>,
    true_values: Option<Vec<String>>,
    false_values: Option<Vec<String>>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum TypeDef {
    Text,
    Integer,
    Bigint,
    Numeric,
    Boolean,
    Date,
    Timestamp,
    Timestamptz,
    Uuid,
    Json,
}

/// Reads one definition file.
pub fn read_file(path: &Path) -> Result<Dataset, DefinitionError> {
    let text = std::fs::read_to_string(path).map_err(|err| DefinitionError {
        file: path.to_owned(),
        line: 0,
        field: "(file)".into(),
        message: err.to_string(),
    })?;
    parse(path, &text)
}

/// Reads a definition from its text; `path` names it in errors and gives the default name.
pub fn parse(path: &Path, text: &str) -> Result<Dataset, DefinitionError> {
    let checker = Checker { path, text };
    let def: DatasetDef = toml::from_str(text).map_err(|err| {
        let line = err.span().map_or(0, |span| checker.line(span.start));
        checker.error(line, "(syntax)", err.message().to_owned())
    })?;
    checker.dataset(def)
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn error(&self, line: usize, field: &str, message: String) -> DefinitionError {
        DefinitionError {
            file: self.path.to_owned(),
            line,
            field: field.to_owned(),
            message,
        }
    }

    fn at<T>(&self, spanned: &Spanned<T>, field: &str, message: String) -> DefinitionError {
        self.error(self.line(spanned.span().start), field, message)
    }

    fn dataset(&self, def: DatasetDef) -> Result<Dataset, DefinitionError> {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match &def.name {
            Some(name) => {
                check_name(name.get_ref(), false).map_err(|m| self.at(name, "name", m))?;
                name.get_ref().clone()
            }
            None => {
                check_name(&stem, false).map_err(|m| self.error(1, "name", m))?;
                stem
            }
        };
        let table = match &def.table {
            Some(table) => {
                check_table(table.get_ref()).map_err(|m| self.at(table, "table", m))?;
                table.get_ref().clone()
            }
            None => {
                let table = name.replace('-', "_");
                check_table(&table).map_err(|m| self.error(1, "table", m))?;
                table
            }
        };
        let delimiter = self.byte(def.delimiter.as_ref(), "delimiter", b',')?;
        let quote = self.byte(def.quote.as_ref(), "quote", b'"')?;
        if delimiter == quote {
            return Err(self.error(1, "quote", "must differ from the delimiter".into()));
        }
        let format = Format {
            delimiter,
            quote,
            header: def.header.unwrap_or(true),
            encoding: match def.encoding {
                None | Some(EncodingDef::Utf8) => TextEncoding::Utf8,
                Some(EncodingDef::Latin1) => TextEncoding::Windows1252,
            },
        };
        let reject_formulas = !matches!(def.formula_injection, Some(FormulaDef::Allow));
        let mut columns = Vec::with_capacity(def.columns.get_ref().len());
        let mut names = HashSet::new();
        let mut headers = HashSet::new();
        if def.columns.get_ref().is_empty() {
            return Err(self.at(&def.columns, "columns", "a dataset needs a column".into()));
        }
        for (i, spanned) in def.columns.get_ref().iter().enumerate() {
            let field = |f: &str| format!("columns[{i}].{f}");
            let column = self.column(spanned, &field, reject_formulas, quote)?;
            if LINEAGE_COLUMNS.contains(&column.name.as_str()) {
                return Err(self.at(
                    spanned,
                    &field("name"),
                    format!("{:?} is a lineage column every table gets", column.name),
                ));
            }
            if !names.insert(column.name.clone()) {
                return Err(self.at(spanned, &field("name"), "named twice".into()));
            }
            for header in &column.headers {
                if !headers.insert(header.clone()) {
                    return Err(self.at(
                        spanned,
                        &field("aliases"),
                        format!("header name {header:?} already means another column"),
                    ));
                }
            }
            columns.push(column);
        }
        let find = |name: &str| columns.iter().position(|c| c.name == name);
        let partition = match &def.partition {
            None => None,
            Some(spanned) => {
                let def = spanned.get_ref();
                let column = find(&def.column).ok_or_else(|| {
                    self.at(
                        spanned,
                        "partition.column",
                        format!("no column {:?}", def.column),
                    )
                })?;
                if !columns[column].kind.is_temporal() {
                    return Err(self.at(
                        spanned,
                        "partition.column",
                        "must be a date, timestamp or timestamptz column".into(),
                    ));
                }
                // A row without a value would sit in the default partition for good.
                if columns[column].nullable || columns[column].default.is_some() {
                    return Err(self.at(
                        spanned,
                        "partition.column",
                        "must be required, without a default".into(),
                    ));
                }
                let by = match def.by {
                    ByDef::Month => PartitionBy::Month,
                    ByDef::Day => PartitionBy::Day,
                };
                Some(Partitioning { column, by })
            }
        };
        let mut unique_key = Vec::new();
        if let Some(spanned) = &def.unique_key {
            for name in spanned.get_ref() {
                let column = find(name)
                    .ok_or_else(|| self.at(spanned, "unique_key", format!("no column {name:?}")))?;
                // NULLs never conflict: a nullable key column would let duplicates through.
                if columns[column].nullable {
                    return Err(self.at(
                        spanned,
                        "unique_key",
                        format!("column {name:?} must be required"),
                    ));
                }
                unique_key.push(column);
            }
            if let Some(partition) = partition {
                if !unique_key.contains(&partition.column) {
                    return Err(self.at(
                        spanned,
                        "unique_key",
                        "must include the partition column (PostgreSQL enforces unique keys per partition)"
                            .into(),
                    ));
                }
            }
        }
        let on_conflict = match &def.on_conflict {
            None => OnConflict::Error,
            Some(spanned) => match spanned.get_ref() {
                ConflictDef::Error => OnConflict::Error,
                ConflictDef::Skip if unique_key.is_empty() => {
                    return Err(self.at(spanned, "on_conflict", "needs a unique_key".into()))
                }
                ConflictDef::Skip => OnConflict::Skip,
            },
        };
        Ok(Dataset {
            name,
            table,
            columns,
            format,
            extra_columns: match def.extra_columns {
                Some(ExtraDef::Ignore) => ExtraColumns::Ignore,
                None | Some(ExtraDef::Refuse) => ExtraColumns::Refuse,
            },
            partition,
            reject_formulas,
            on_error: match def.on_error {
                None | Some(OnErrorDef::RejectRows) => ErrorPolicy::RejectRows,
                Some(OnErrorDef::RejectChunk) => ErrorPolicy::RejectChunk,
            },
            unique_key,
            on_conflict,
            sheet: def.sheet,
        })
    }

    fn byte(
        &self,
        value: Option<&Spanned<String>>,
        field: &str,
        default: u8,
    ) -> Result<u8, DefinitionError> {
        let Some(value) = value else {
            return Ok(default);
        };
        match value.get_ref().as_bytes() {
            [b] if b.is_ascii() && !matches!(b, b'\n' | b'\r' | 0) => Ok(*b),
            _ => Err(self.at(
                value,
                field,
                "must be one ASCII character other than a line break".into(),
            )),
        }
    }

    fn column(
        &self,
        spanned: &Spanned<ColumnDef>,
        field: &dyn Fn(&str) -> String,
        reject_formulas: bool,
        quote: u8,
    ) -> Result<Column, DefinitionError> {
        let def = spanned.get_ref();
        let fail = |f: &str, message: String| self.at(spanned, &field(f), message);
        check_name(&def.name, true).map_err(|m| fail("name", m))?;
        let not_for = |f: &str, present: bool| {
            if present {
                Err(fail(
                    f,
                    format!("does not apply to a {} column", type_name(def.kind)),
                ))
            } else {
                Ok(())
            }
        };
        use TypeDef as T;
        not_for(
            "max_length",
            def.max_length.is_some() && def.kind != T::Text,
        )?;
        not_for("values", def.values.is_some() && def.kind != T::Text)?;
        let numeric = def.kind == T::Numeric;
        not_for("precision", def.precision.is_some() && !numeric)?;
        not_for("scale", def.scale.is_some() && !numeric)?;
        let temporal = matches!(def.kind, T::Date | T::Timestamp | T::Timestamptz);
        not_for("formats", def.formats.is_some() && !temporal)?;
        let boolean = def.kind == T::Boolean;
        not_for("true_values", def.true_values.is_some() && !boolean)?;
        not_for("false_values", def.false_values.is_some() && !boolean)?;
        let formats = def.formats.clone().unwrap_or_default();
        for format in &formats {
            check_format(format, def.kind).map_err(|m| fail("formats", m))?;
        }
        let kind = match def.kind {
            T::Text => match (&def.values, def.max_length) {
                (Some(_), Some(_)) => {
                    return Err(fail("max_length", "does not apply with values".into()))
                }
                (Some(values), None) if values.is_empty() => {
                    return Err(fail("values", "needs at least one value".into()))
                }
                (Some(values), None) => ColumnKind::OneOf(values.clone()),
                (None, Some(0)) => return Err(fail("max_length", "must be at least 1".into())),
                (None, max) => ColumnKind::Text {
                    max_chars: max.unwrap_or(usize::MAX),
                },
            },
            T::Integer => ColumnKind::Integer,
            T::Bigint => ColumnKind::BigInt,
            T::Numeric => match (def.precision, def.scale) {
                (Some(p), _) if p == 0 || p > MAX_PRECISION => {
                    return Err(fail("precision", format!("must be 1 to {MAX_PRECISION}")))
                }
                (Some(p), Some(s)) if s > p => {
                    return Err(fail("scale", format!("{s} is more than the precision {p}")))
                }
                (None, Some(_)) => return Err(fail("scale", "needs a precision".into())),
                (Some(p), s) => ColumnKind::Numeric {
                    precision: Some(p),
                    scale: s.unwrap_or(0),
                },
                (None, None) => ColumnKind::Numeric {
                    precision: None,
                    scale: MAX_PRECISION,
                },
            },
            T::Boolean => {
                let spellings = |given: &Option<Vec<String>>, default: &[&str]| match given {
                    Some(given) => given.iter().map(|s| s.to_lowercase()).collect(),
                    None => default.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                };
                let truthy = spellings(&def.true_values, &["true", "t", "yes", "y", "1"]);
                let falsy = spellings(&def.false_values, &["false", "f", "no", "n", "0"]);
                if truthy.is_empty() || falsy.is_empty() || truthy.iter().any(|t| falsy.contains(t))
                {
                    return Err(fail(
                        "true_values",
                        "true and false spellings must be non-empty and distinct".into(),
                    ));
                }
                ColumnKind::Boolean { truthy, falsy }
            }
            T::Date => ColumnKind::Date { formats },
            T::Timestamp => ColumnKind::Timestamp { formats },
            T::Timestamptz => ColumnKind::TimestampTz { formats },
            T::Uuid => ColumnKind::Uuid,
            T::Json => ColumnKind::Json,
        };
        let mut headers = vec![def.name.to_lowercase()];
        for alias in &def.aliases {
            let alias = alias.trim().to_lowercase();
            if alias.is_empty() {
                return Err(fail("aliases", "an alias cannot be empty".into()));
            }
            if !headers.contains(&alias) {
                headers.push(alias);
            }
        }
        let mut column = Column {
            name: def.name.clone(),
            headers,
            kind,
            nullable: !def.required,
            default: None,
        };
        if let Some(default) = &def.default {
            let mut field = Vec::new();
            let context = CellContext {
                quote,
                may_have_quotes: false,
                utf8_checked: false,
                reject_formulas,
            };
            match column.encode_cell(default.as_bytes(), context, &mut field) {
                Ok(_) if !default.is_empty() => column.default = Some((default.clone(), field)),
                Ok(_) => return Err(fail("default", "cannot be empty".into())),
                Err(problem) => return Err(fail("default", problem)),
            }
        }
        Ok(column)
    }
}

fn type_name(kind: TypeDef) -> &'static str {
    match kind {
        TypeDef::Text => "text",
        TypeDef::Integer => "integer",
        TypeDef::Bigint => "bigint",
        TypeDef::Numeric => "numeric",
        TypeDef::Boolean => "boolean",
        TypeDef::Date => "date",
        TypeDef::Timestamp => "timestamp",
        TypeDef::Timestamptz => "timestamptz",
        TypeDef::Uuid => "uuid",
        TypeDef::Json => "json",
    }
}

/// Dataset names are what clients send; table and column names become SQL identifiers (quoted
/// anyway, but kept plain so nobody has to quote them by hand).
fn check_name(name: &str, identifier: bool) -> Result<(), String> {
    let max = if identifier { MAX_TABLE_NAME } else { 63 };
    let valid_first =
        |b: u8| b.is_ascii_lowercase() || b == b'_' || (!identifier && b.is_ascii_digit());
    let valid = |b: u8| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || (!identifier && b == b'-')
    };
    let bytes = name.as_bytes();
    if bytes.is_empty()
        || bytes.len() > max
        || !valid_first(bytes[0])
        || !bytes.iter().all(|&b| valid(b))
    {
        let allowed = if identifier {
            "lower-case letters, digits and _, not starting with a digit"
        } else {
            "lower-case letters, digits, _ and -"
        };
        return Err(format!("{name:?} must be 1 to {max} characters: {allowed}"));
    }
    Ok(())
}

/// A table name: an identifier not starting with `ingest_` (the engine's own tables, such as
/// its staging table, which would shadow the dataset's).
fn check_table(name: &str) -> Result<(), String> {
    check_name(name, true)?;
    if name.starts_with("ingest_") {
        return Err(format!(
            "{name:?}: names starting with ingest_ are the engine's own"
        ));
    }
    Ok(())
}

/// A format must parse as chrono's `strftime` syntax, and a `timestamptz` one must read an
/// offset (without one, the instant would depend on the server's time zone).
fn check_format(format: &str, kind: TypeDef) -> Result<(), String> {
    let items: Vec<Item> = StrftimeItems::new(format).collect();
    if items.iter().any(|item| matches!(item, Item::Error)) {
        return Err(format!("{format:?} is not a valid strftime format"));
    }
    if kind == TypeDef::Timestamptz
        && !["%z", "%:z", "%::z", "%#z"]
            .iter()
            .any(|z| format.contains(z))
    {
        return Err(format!("{format:?} has no offset (%z or %:z)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse(Path::new("datasets/x.toml"), text)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_field() {
        let text = "table = \"x\"\n[[columns]]\nname = \"a\"\ntype = \"numeric\"\nprecision = 4\nscale = 5\n";
        assert_eq!(
            error(text),
            "datasets/x.toml:2: columns[0].scale: 5 is more than the precision 4"
        );
        let text = "[[columns]]\nname = \"a\"\ntype = \"numbr\"\n";
        let message = error(text);
        assert!(
            message.starts_with("datasets/x.toml:3: (syntax): unknown variant `numbr`"),
            "{message}"
        );
        let text = "[[columns]]\nname = \"a\"\ntype = \"text\"\nlength = 3\n";
        assert!(
            error(text).contains("unknown field `length`"),
            "{}",
            error(text)
        );
        let text = "[[columns]]\nname = \"a\"\ntype = \"integer\"\nmax_length = 3\n";
        assert_eq!(
            error(text),
            "datasets/x.toml:1: columns[0].max_length: does not apply to a integer column"
        );
        let text = "partition = { column = \"a\", by = \"month\" }\n[[columns]]\nname = \"a\"\ntype = \"text\"\n";
        assert!(error(text).contains("partition.column: must be a date"));
        let text =
            "[[columns]]\nname = \"a\"\ntype = \"timestamptz\"\nformats = [\"%Y-%m-%d %H:%M\"]\n";
        assert!(error(text).contains("has no offset"));
        let text = "[[columns]]\nname = \"a\"\ntype = \"integer\"\ndefault = \"x\"\n";
        assert!(error(text).contains("columns[0].default: \"x\" is not an integer"));
        let text = "[[columns]]\nname = \"upload_id\"\ntype = \"uuid\"\n";
        assert!(error(text).contains("lineage column"));
        let text = "on_conflict = \"skip\"\n[[columns]]\nname = \"a\"\ntype = \"uuid\"\n";
        assert!(error(text).contains("on_conflict: needs a unique_key"));
        let text = "unique_key = [\"a\"]\n[[columns]]\nname = \"a\"\ntype = \"uuid\"\n";
        assert!(error(text).contains("unique_key: column \"a\" must be required"));
        let text = "partition = { column = \"a\", by = \"day\" }\n[[columns]]\nname = \"a\"\ntype = \"date\"\n";
        assert!(error(text).contains("partition.column: must be required"));
        let text = "table = \"ingest_staging\"\n[[columns]]\nname = \"a\"\ntype = \"uuid\"\n";
        assert!(error(text).contains("the engine's own"));
    }

    #[test]
    fn defaults_are_encoded_once() {
        let text = "[[columns]]\nname = \"n\"\ntype = \"integer\"\ndefault = \"7\"\n";
        let dataset = parse(Path::new("d/shop.toml"), text).expect("valid");
        assert_eq!(dataset.name, "shop");
        assert_eq!(dataset.table, "shop");
        let (text, field) = dataset.columns[0].default.clone().expect("a default");
        assert_eq!(text, "7");
        assert_eq!(field, [0, 0, 0, 4, 0, 0, 0, 7]);
    }
}
