//! Contacts from a CSV upload: a header row naming the columns, `to` required, `timezone`
//! optional, every other column a template variable. Each row keeps its line number, so a
//! problem is reported where the user can find it in their spreadsheet.

use serde_json::{Map, Value};

/// One data row, read but not validated yet.
#[derive(Debug, Clone, PartialEq)]
pub struct RawContact {
    /// Its line in the file (the header is line 1; a quoted field may span lines).
    pub line: u64,
    /// The `to` column as written.
    pub to: String,
    /// The `timezone` column, when present and not empty.
    pub timezone: Option<String>,
    /// The other columns that are not empty, by header name.
    pub vars: Map<String, Value>,
}

/// A CSV problem, at a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct CsvError {
    /// The line the problem is on.
    pub line: u64,
    /// What is wrong.
    pub problem: String,
}

/// Reads every row of `body`; at most `max_rows` data rows.
pub fn read_contacts(body: &[u8], max_rows: usize) -> Result<Vec<RawContact>, CsvError> {
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(::csv::Trim::All)
        .from_reader(body);
    let columns = header_columns(&mut reader)?;
    let mut contacts = Vec::new();
    let mut record = ::csv::StringRecord::new();
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(error) => return Err(csv_error(&error)),
        }
        let line = record.position().map_or(0, ::csv::Position::line);
        if record.iter().all(str::is_empty) {
            // A blank line at the end of a spreadsheet export is not a contact.
            continue;
        }
        if contacts.len() == max_rows {
            return Err(CsvError {
                line,
                problem: format!("a campaign takes at most {max_rows} contacts"),
            });
        }
        contacts.push(row(&columns, &record, line));
    }
    if contacts.is_empty() {
        return Err(CsvError {
            line: 2,
            problem: "no contacts: the file has a header row but no data rows".into(),
        });
    }
    Ok(contacts)
}

/// What each column of the header holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Column {
    To,
    TimeZone,
    Var(String),
}

fn header_columns(reader: &mut ::csv::Reader<&[u8]>) -> Result<Vec<Column>, CsvError> {
    let header = reader.headers().map_err(|error| csv_error(&error))?.clone();
    let at_header = |problem: String| CsvError { line: 1, problem };
    let mut columns: Vec<Column> = Vec::with_capacity(header.len());
    for (index, name) in header.iter().enumerate() {
        let column = match name.to_ascii_lowercase().as_str() {
            "" => {
                return Err(at_header(format!(
                    "column {} has no name; every column needs a header",
                    index + 1
                )));
            }
            "to" => Column::To,
            "timezone" => Column::TimeZone,
            _ => Column::Var(name.to_owned()),
        };
        if columns.contains(&column) {
            return Err(at_header(format!("column {name:?} appears twice")));
        }
        columns.push(column);
    }
    if !columns.contains(&Column::To) {
        return Err(at_header(
            "no `to` column: the header row must name the column of numbers `to`".into(),
        ));
    }
    Ok(columns)
}

fn row(columns: &[Column], record: &::csv::StringRecord, line: u64) -> RawContact {
    let mut contact = RawContact {
        line,
        to: String::new(),
        timezone: None,
        vars: Map::new(),
    };
    for (column, value) in columns.iter().zip(record.iter()) {
        match column {
            Column::To => value.clone_into(&mut contact.to),
            Column::TimeZone if !value.is_empty() => contact.timezone = Some(value.to_owned()),
            // An empty cell is a missing value: the template check names it.
            Column::Var(name) if !value.is_empty() => {
                contact
                    .vars
                    .insert(name.clone(), Value::String(value.to_owned()));
            }
            _ => {}
        }
    }
    contact
}

fn csv_error(error: &::csv::Error) -> CsvError {
    let line = error.position().map_or(1, ::csv::Position::line);
    let problem = match error.kind() {
        ::csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("has {len} fields, the header row has {expected_len}"),
        ::csv::ErrorKind::Utf8 { .. } => "is not UTF-8 text; save the file as CSV UTF-8".to_owned(),
        _ => error.to_string(),
    };
    CsvError { line, problem }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_their_line_numbers_and_vars() {
        let body = b"to,name,timezone,company\n+15551230001,Asha,,Acme\n\"+15551230002\",\"Bo\nB\",Asia/Tokyo,\n";
        let contacts = read_contacts(body, 10).unwrap();
        assert_eq!(contacts.len(), 2);
        assert_eq!(contacts[0].line, 2);
        assert_eq!(contacts[0].timezone, None);
        assert_eq!(contacts[0].vars["company"], "Acme");
        assert_eq!(contacts[1].line, 3);
        assert_eq!(contacts[1].to, "+15551230002");
        assert_eq!(contacts[1].timezone.as_deref(), Some("Asia/Tokyo"));
        assert_eq!(contacts[1].vars["name"], "Bo\nB");
        assert!(
            !contacts[1].vars.contains_key("company"),
            "empty is missing"
        );
    }

    #[test]
    fn problems_name_their_line() {
        let short = read_contacts(b"to,name\n+15551230001,A\n+15551230002\n", 10).unwrap_err();
        assert_eq!(short.line, 3);
        assert!(short.problem.contains("1 fields"), "{short}");
        let no_to = read_contacts(b"number,name\n+1555,A\n", 10).unwrap_err();
        assert_eq!(no_to.line, 1);
        let twice = read_contacts(b"to,TO\n", 10).unwrap_err();
        assert!(twice.problem.contains("twice"));
        let too_many = read_contacts(b"to\n+1\n+2\n+3\n", 2).unwrap_err();
        assert_eq!(too_many.line, 4);
        assert!(read_contacts(b"to\n\n", 2).is_err(), "no rows");
        let not_utf8 = read_contacts(b"to,name\n+15551230001,\xff\n", 2).unwrap_err();
        assert_eq!(not_utf8.line, 2);
    }
}
