//! Small XLSX workbooks written by hand with the `zip` crate, so a test controls every part of
//! one (shared strings, date styles, sizes) and can build hostile ones too.

use std::io::Write;

use zip::write::SimpleFileOptions;

/// A cell of a test workbook.
#[derive(Clone)]
pub enum Cell {
    /// Text, through the shared-strings table.
    Text(&'static str),
    /// Owned text, through the shared-strings table.
    Owned(String),
    Number(f64),
    /// An Excel date serial with a date style (calamine reads it as a date).
    Date(f64),
    /// Text written in the cell itself (`t="inlineStr"`).
    Inline(String),
    /// The shared string at this index, added by an earlier `Text` or `Owned` cell.
    Shared(usize),
}

const MAIN: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
const RELS: &str = "http://schemas.openxmlformats.org/package/2006/relationships";
const DOC: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";

/// A workbook of one sheet holding `rows`; `extra` members are added as they are.
pub fn workbook(rows: &[Vec<Cell>], extra: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut members = parts(rows);
    members.extend(
        extra
            .iter()
            .map(|(name, bytes)| (name.to_string(), bytes.clone())),
    );
    zip(&members)
}

/// The members of a workbook of one sheet holding `rows`, by name, for a test to alter.
pub fn parts(rows: &[Vec<Cell>]) -> Vec<(String, Vec<u8>)> {
    let mut strings: Vec<String> = Vec::new();
    let mut sheet = format!("<worksheet xmlns=\"{MAIN}\"><sheetData>");
    for (r, row) in rows.iter().enumerate() {
        sheet.push_str(&format!("<row r=\"{}\">", r + 1));
        for (c, cell) in row.iter().enumerate() {
            let at = format!("{}{}", (b'A' + c as u8) as char, r + 1);
            match cell {
                Cell::Text(text) => {
                    strings.push((*text).to_owned());
                    sheet.push_str(&format!(
                        "<c r=\"{at}\" t=\"s\"><v>{}</v></c>",
                        strings.len() - 1
                    ));
                }
                Cell::Owned(text) => {
                    strings.push(text.clone());
                    sheet.push_str(&format!(
                        "<c r=\"{at}\" t=\"s\"><v>{}</v></c>",
                        strings.len() - 1
                    ));
                }
                Cell::Number(n) => sheet.push_str(&format!("<c r=\"{at}\"><v>{n}</v></c>")),
                Cell::Date(n) => sheet.push_str(&format!("<c r=\"{at}\" s=\"1\"><v>{n}</v></c>")),
                Cell::Inline(text) => sheet.push_str(&format!(
                    "<c r=\"{at}\" t=\"inlineStr\"><is><t>{}</t></is></c>",
                    escape(text)
                )),
                Cell::Shared(index) => {
                    sheet.push_str(&format!("<c r=\"{at}\" t=\"s\"><v>{index}</v></c>"))
                }
            }
        }
        sheet.push_str("</row>");
    }
    sheet.push_str("</sheetData></worksheet>");
    let mut shared = format!(
        "<sst xmlns=\"{MAIN}\" count=\"{0}\" uniqueCount=\"{0}\">",
        strings.len()
    );
    for text in &strings {
        shared.push_str(&format!("<si><t>{}</t></si>", escape(text)));
    }
    shared.push_str("</sst>");
    let members: Vec<(&str, Vec<u8>)> = vec![
        ("[Content_Types].xml", 
            "<Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
             <Default Extension=\"rels\" ContentType=\"application/vnd.openxmlformats-package.relationships+xml\"/>\
             <Default Extension=\"xml\" ContentType=\"application/xml\"/>\
             <Override PartName=\"/xl/workbook.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml\"/>\
             <Override PartName=\"/xl/worksheets/sheet1.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml\"/>\
             <Override PartName=\"/xl/sharedStrings.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml\"/>\
             <Override PartName=\"/xl/styles.xml\" ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml\"/>\
             </Types>".as_bytes().to_vec()),
        ("_rels/.rels", format!(
            "<Relationships xmlns=\"{RELS}\"><Relationship Id=\"rId1\" Type=\"{DOC}/officeDocument\" Target=\"xl/workbook.xml\"/></Relationships>").into_bytes()),
        ("xl/workbook.xml", format!(
            "<workbook xmlns=\"{MAIN}\" xmlns:r=\"{DOC}\"><sheets><sheet name=\"Statement\" sheetId=\"1\" r:id=\"rId1\"/></sheets></workbook>").into_bytes()),
        ("xl/_rels/workbook.xml.rels", format!(
            "<Relationships xmlns=\"{RELS}\">\
             <Relationship Id=\"rId1\" Type=\"{DOC}/worksheet\" Target=\"worksheets/sheet1.xml\"/>\
             <Relationship Id=\"rId2\" Type=\"{DOC}/sharedStrings\" Target=\"sharedStrings.xml\"/>\
             <Relationship Id=\"rId3\" Type=\"{DOC}/styles\" Target=\"styles.xml\"/>\
             </Relationships>").into_bytes()),
        // Style 1 is the built-in date-time format 22 (`m/d/yy h:mm`).
        ("xl/styles.xml", format!(
            "<styleSheet xmlns=\"{MAIN}\"><cellXfs count=\"2\"><xf numFmtId=\"0\"/><xf numFmtId=\"22\" applyNumberFormat=\"1\"/></cellXfs></styleSheet>").into_bytes()),
        ("xl/sharedStrings.xml", shared.into_bytes()),
        ("xl/worksheets/sheet1.xml", sheet.into_bytes()),
    ];
    members
        .into_iter()
        .map(|(name, bytes)| (name.to_owned(), bytes))
        .collect()
}

/// The zip of `members`, deflated.
pub fn zip(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Original-format rows as a workbook: the header, then `rows` rows from second `start`, dates as
/// date cells and amounts as numbers, as a spreadsheet export has them.
pub fn original_workbook(start: u64, rows: u64) -> Vec<u8> {
    let mut sheet = vec![vec![
        Cell::Text("date"),
        Cell::Text("content"),
        Cell::Text("amount"),
        Cell::Text("type"),
    ]];
    for i in start..start + rows {
        // 2023-01-01 is Excel day 44927; one row per minute keeps every serial exact enough.
        let serial = 44927.0 + (i as f64) / 1440.0;
        let amount = ((i as i64 * 7919 % 2_000_000) - 1_000_000) as f64 / 1000.0;
        let kind = if i % 3 == 0 { "Withdrawal" } else { "Deposit" };
        sheet.push(vec![
            Cell::Date(serial),
            Cell::Text("Any text, there"),
            Cell::Number(amount),
            Cell::Text(kind),
        ]);
    }
    workbook(&sheet, &[])
}
